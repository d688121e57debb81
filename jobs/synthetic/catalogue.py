"""What is sold and where: the category tree, brands and products, and the partner stores with their prices.

A product is sold at every partner carrying its top category (general stores carry all), at partner
prices +-15% around its base price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.synthetic.reference import CATALOG, TOPS


@dataclass
class Catalogue:
    leaf_names: list[str]  # "top/leaf"
    leaf_top: np.ndarray  # leaf -> top category
    brand_names: list[str]
    top_brand_count: np.ndarray  # top -> how many brands it has
    top_leaf_start: np.ndarray  # top -> its first leaf
    top_leaf_w: np.ndarray  # (top, leaf within top) -> weight
    lb_count: np.ndarray  # (leaf, brand within top) -> products
    lb_start: np.ndarray  # (leaf, brand within top) -> first product
    prod_leaf: np.ndarray
    prod_brand: np.ndarray
    prod_base: np.ndarray  # base price
    prod_ids: np.ndarray


def build_catalogue(rng: np.random.Generator) -> Catalogue:
    """Every leaf and brand of CATALOG, and for every leaf and brand of its top 1-5 products."""
    leaf_names, leaf_top, leaf_price, leaf_w = [], [], [], []
    brand_names, brand_top = [], []
    top_brand_start = np.zeros(len(TOPS), dtype=np.int64)
    top_brand_count = np.zeros(len(TOPS), dtype=np.int64)
    for t, (leaves, brands) in enumerate(CATALOG.values()):
        top_brand_start[t] = len(brand_names)
        top_brand_count[t] = len(brands)
        brand_names += brands
        brand_top += [t] * len(brands)
        for leaf, (price, w) in leaves.items():
            leaf_names.append(f"{TOPS[t]}/{leaf}")
            leaf_top.append(t)
            leaf_price.append(price)
            leaf_w.append(w)
    n_leaf, n_top = len(leaf_names), len(TOPS)
    max_leaf = max(len(v[0]) for v in CATALOG.values())
    top_leaf_start = np.array([leaf_top.index(t) for t in range(n_top)])
    top_leaf_w = np.zeros((n_top, max_leaf))
    for i in range(n_leaf):
        top_leaf_w[leaf_top[i], i - top_leaf_start[leaf_top[i]]] = leaf_w[i]
    # products: for every leaf and every brand of its top, 1-5 products (grouped by leaf, then brand)
    max_brand = int(top_brand_count.max())
    counts = np.zeros((n_leaf, max_brand), dtype=np.int64)
    for i in range(n_leaf):
        counts[i, : top_brand_count[leaf_top[i]]] = rng.integers(1, 6, size=top_brand_count[leaf_top[i]])
    lb_start = (np.cumsum(counts.ravel()) - counts.ravel()).reshape(counts.shape)
    n_prod = int(counts.sum())
    flat_leaf, flat_brand = np.divmod(np.repeat(np.arange(counts.size), counts.ravel()), max_brand)
    leaf_top_arr = np.array(leaf_top)
    prod_base = np.array(leaf_price)[flat_leaf] * rng.lognormal(0.0, 0.45, n_prod)
    prod_ids = np.array([f"SKU-{x:06d}" for x in rng.choice(900_000, size=n_prod, replace=False) + 100_000])
    return Catalogue(
        leaf_names=leaf_names,
        leaf_top=leaf_top_arr,
        brand_names=brand_names,
        top_brand_count=top_brand_count,
        top_leaf_start=top_leaf_start,
        top_leaf_w=top_leaf_w,
        lb_count=counts,
        lb_start=lb_start,
        prod_leaf=flat_leaf,
        prod_brand=top_brand_start[leaf_top_arr[flat_leaf]] + flat_brand,
        prod_base=prod_base,
        prod_ids=prod_ids,
    )


@dataclass
class Stores:
    partner_ids: list[str]
    carry: np.ndarray  # (partner, top) -> sells that category
    popularity: np.ndarray  # partner -> how likely people shop there (Zipf-like)
    sends_session: np.ndarray  # partner -> sends session_id
    price: np.ndarray  # (product, partner) -> price there


def build_stores(rng: np.random.Generator, catalogue: Catalogue, partners: int) -> Stores:
    """K partner stores: every third (and the first) a general store, the others carry 2-4 top categories."""
    n_top = len(TOPS)
    width = max(3, len(str(partners)))
    carry = np.zeros((partners, n_top), dtype=bool)
    for k in range(partners):
        if k % 3 == 0:
            carry[k] = True
        else:
            carry[k, rng.choice(n_top, size=rng.integers(2, 5), replace=False)] = True
    noise = rng.uniform(-0.15, 0.15, size=(len(catalogue.prod_ids), partners))
    price = catalogue.prod_base[:, None] * (1.0 + noise)
    return Stores(
        partner_ids=[f"p{k:0{width}d}" for k in range(1, partners + 1)],
        carry=carry,
        popularity=1.0 / np.arange(1, partners + 1) ** 0.6,
        # 3 partners in 8 leave session_id null (p002, p004, p007, ...); the first always sends it
        sends_session=~np.isin(np.arange(partners) % 8, [1, 3, 6]),
        price=np.where(price >= 5, np.round(price) - 0.01, np.round(price, 2)),
    )
