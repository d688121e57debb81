"""People's identifiers, and the ways they get typed: what identity resolution has to untangle.

* 1-3 devices a person (UUIDs stable across partners); anonymous people have one;
* shared public devices (office / internet cafe, one per 400 people) and family tablets (one household
  per 200 people: both members keep their own customer record at the store they both use);
* customer and subscriber records per partner: per-partner number sequences, so the same string at two
  partners is two people;
* 1-2 emails a person, unique after normalisation, typed in seven ways (case, spaces, `+tags`, gmail
  dots, googlemail.com); 0-2 valid mobile numbers, typed in eight ways (`+CC`, `00CC`, trunk 0, spaces,
  dashes, brackets), ~5% of another country than the person's (typed internationally);
* junk contacts typed at checkout by many unrelated people (`JUNK_EMAILS`, `JUNK_PHONES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.synthetic.people import People
from jobs.synthetic.reference import (
    COUNTRIES,
    COUNTRY_CODES,
    EMAIL_VARIANT_W,
    JUNK_EMAILS,
    JUNK_PHONE_W,
    JUNK_PHONES,
    MAX_DEVICES,
    MAX_SLOTS,
    N_EMAIL_VARIANTS,
    N_PHONE_VARIANTS,
    PHONE_VARIANT_W,
)
from jobs.synthetic.sampling import explode, hex_ids


@dataclass
class Identifiers:
    rng: np.random.Generator  # the world's: typing an identifier draws from the same sequence
    person_dev: np.ndarray  # (person, k) -> personal device, -1 for none
    dev_w: np.ndarray  # (person, k) -> how often that device is used
    n_public: int
    public_city: np.ndarray  # public device -> city
    households: np.ndarray  # (household, 2) -> the two people sharing a family tablet
    public_dev: np.ndarray  # public device -> device index
    family_dev: np.ndarray  # household -> device index
    dev_type: np.ndarray  # device -> index in DEVICE_TYPES
    dev_ids: np.ndarray
    cust: np.ndarray  # (person, slot) -> has a customer record there
    sub: np.ndarray  # (person, slot) -> has a subscriber record there
    cust_ids: np.ndarray
    sub_ids: np.ndarray
    sub_channel: np.ndarray  # (person, slot) -> email, sms, viber
    person_email: np.ndarray  # (person, k) -> mailbox, -1 for none
    email_strings: np.ndarray  # mailbox * N_EMAIL_VARIANTS + variant -> as typed; the junk last
    n_emails: int
    person_phone: np.ndarray
    phone_strings: np.ndarray
    n_phones: int

    def email_code(self, email: np.ndarray) -> np.ndarray:
        """Codes into email_strings for the given mailbox indices (-1 stays null), as typed."""
        var = self.rng.choice(N_EMAIL_VARIANTS, size=len(email), p=EMAIL_VARIANT_W)
        return np.where(email >= 0, email * N_EMAIL_VARIANTS + var, -1)

    def junk_email_code(self, junk: int) -> int:
        return self.n_emails * N_EMAIL_VARIANTS + junk

    def phone_code(self, phone: np.ndarray, junk: np.ndarray | None = None, clean: bool = False) -> np.ndarray:
        """Codes into phone_strings, as typed (`clean`: as a system stores it); `junk` rows get a junk number."""
        rng = self.rng
        if clean:  # systems (SMS gateways) store numbers internationally
            var = rng.choice(3, size=len(phone), p=[0.7, 0.2, 0.1])
        else:
            var = rng.choice(N_PHONE_VARIANTS, size=len(phone), p=PHONE_VARIANT_W)
        code = np.where(phone >= 0, phone * N_PHONE_VARIANTS + var, -1)
        if junk is not None:
            j = rng.choice(len(JUNK_PHONES), size=len(phone), p=JUNK_PHONE_W / JUNK_PHONE_W.sum())
            code = np.where(junk, self.junk_phone_code(j), code)
        return code

    def junk_phone_code(self, junk: int | np.ndarray) -> int | np.ndarray:
        return self.n_phones * N_PHONE_VARIANTS + junk


def issue_identifiers(rng: np.random.Generator, people: People) -> Identifiers:
    """Devices, records, emails and phones of everyone. A household's second member gets an account at the
    first member's main store (their family tablet is used there): `people.slots` changes accordingly."""
    P = len(people.anon)
    # devices
    n_dev = np.where(people.anon, 1, rng.choice(3, size=P, p=[0.45, 0.4, 0.15]) + 1)
    dev_owner, dev_pos = explode(n_dev)
    n_personal = len(dev_owner)
    person_dev = np.full((P, MAX_DEVICES), -1, dtype=np.int64)
    person_dev[dev_owner, dev_pos] = np.arange(n_personal)
    dev_w = np.where(person_dev >= 0, np.array([0.6, 0.28, 0.12])[None, :], 0.0)
    dev_type = np.where(
        dev_pos == 0,
        rng.choice(3, size=n_personal, p=[0.3, 0.65, 0.05]),
        rng.choice(3, size=n_personal, p=[0.55, 0.2, 0.25]),
    )
    # shared public devices (office / internet cafe) and family tablets
    n_public = max(4, P // 400)
    city_w = np.bincount(people.city, minlength=len(people.city_names)).astype(float)
    public_city = rng.choice(len(people.city_names), size=n_public, p=city_w / city_w.sum())
    ident = np.flatnonzero(~people.anon)
    n_house = max(2, P // 200) if len(ident) >= 4 else 0
    pairs = rng.choice(ident, size=2 * n_house, replace=False).reshape(-1, 2) if n_house else np.zeros((0, 2), int)
    n_all = n_personal + n_public + len(pairs)
    dev_ids = hex_ids(rng, n_all, 16, dashes=True)

    # customer / subscriber records per partner slot
    slots = people.slots
    valid = slots >= 0
    cust = valid & (rng.random((P, MAX_SLOTS)) < 0.6) & ~people.anon[:, None]
    cust[:, 0] = ~people.anon  # everyone identified has an account at their main store
    sub = valid & (rng.random((P, MAX_SLOTS)) < 0.35) & ~people.anon[:, None]
    # households: both members use the first store of the first member, each with an own account
    for a, b in pairs:
        k = slots[a, 0]
        where = np.flatnonzero(slots[b] == k)
        j = int(where[0]) if len(where) else int(people.n_slots[b] - 1)
        slots[b, j] = k
        cust[b, j] = True
    people.slot_w = np.where(slots >= 0, people.slot_w, 0.0)
    cust_ids = _per_partner_numbers(rng, slots, cust, 10_000)
    sub_ids = _per_partner_numbers(rng, slots, sub, 500_000)

    person_email, email_strings = _emails(rng, people)
    person_phone, phone_strings = _phones(rng, people)

    # subscription channel per record: email, sms, viber (sms / viber need a phone)
    has_phone = (person_phone[:, 0] >= 0)[:, None]
    channel = rng.choice(3, size=(P, MAX_SLOTS), p=[0.6, 0.2, 0.2])
    return Identifiers(
        rng=rng,
        person_dev=person_dev,
        dev_w=dev_w,
        n_public=n_public,
        public_city=public_city,
        households=pairs,
        public_dev=n_personal + np.arange(n_public),
        family_dev=n_personal + n_public + np.arange(len(pairs)),
        dev_type=np.concatenate([dev_type, np.zeros(n_public, int), np.full(len(pairs), 2)]),
        dev_ids=dev_ids,
        cust=cust,
        sub=sub,
        cust_ids=cust_ids,
        sub_ids=sub_ids,
        sub_channel=np.where(has_phone, channel, 0),
        person_email=person_email,
        email_strings=email_strings,
        n_emails=int((person_email >= 0).sum()),
        person_phone=person_phone,
        phone_strings=phone_strings,
        n_phones=int((person_phone >= 0).sum()),
    )


def _per_partner_numbers(rng: np.random.Generator, slots: np.ndarray, flags: np.ndarray, base: int) -> np.ndarray:
    """Per-partner sequence numbers for the flagged (person, slot) records, in random order."""
    out = np.full(flags.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(flags)
    partner = slots[rows, cols]
    order = np.lexsort((rng.random(len(rows)), partner))
    sorted_partner = partner[order]
    first = np.searchsorted(sorted_partner, sorted_partner, side="left")
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - first
    out[rows, cols] = base + rank * 3 + rng.integers(0, 3, size=len(rows))
    return out


def _emails(rng: np.random.Generator, people: People) -> tuple[np.ndarray, np.ndarray]:
    """1-2 mailboxes a person, unique after normalisation (a unique number in every local part)."""
    P = len(people.anon)
    n_em = np.where(people.anon, 0, rng.choice(2, size=P, p=[0.7, 0.3]) + 1)
    em_owner, em_pos = explode(n_em)
    person_email = np.full((P, 2), -1, dtype=np.int64)
    person_email[em_owner, em_pos] = np.arange(len(em_owner))
    numbers = rng.choice(len(em_owner) * 20 + 1000, size=len(em_owner), replace=False) + 7
    styles = rng.integers(0, 5, size=len(em_owner))
    tags = ["shop", "promo", "news", "deals", "orders"]
    variants: list[str] = []
    u_first = rng.random(len(em_owner))
    u_last = rng.random(len(em_owner))
    u_dom = rng.random(len(em_owner))
    u_misc = rng.integers(0, 1 << 30, size=len(em_owner))
    for i, p in enumerate(em_owner):
        c = COUNTRIES[COUNTRY_CODES[people.country[p]]]
        first = c[6][int(u_first[i] * len(c[6]))]
        last = c[7][int(u_last[i] * len(c[7]))]
        doms, dw = zip(*c[5])
        cum = np.cumsum(dw) / sum(dw)
        domain = doms[int(np.searchsorted(cum, u_dom[i], side="right"))]
        n = numbers[i]
        local = [
            f"{first}.{last}{n}",
            f"{first}{last}{n}",
            f"{first[0]}{last}{n}",
            f"{first}_{last}{n}",
            f"{last}.{first}{n}",
        ][styles[i]]
        variants += email_variants(local, domain, tags[u_misc[i] % len(tags)], int(u_misc[i]))
    return person_email, np.array(variants + JUNK_EMAILS, dtype=object)


def _phones(rng: np.random.Generator, people: People) -> tuple[np.ndarray, np.ndarray]:
    """0-2 valid mobile numbers a person, unique; ~5% of another country (typed internationally)."""
    P = len(people.anon)
    n_ph = np.where(people.anon, 0, rng.choice(3, size=P, p=[0.3, 0.6, 0.1]))
    ph_owner, ph_pos = explode(n_ph)
    person_phone = np.full((P, 2), -1, dtype=np.int64)
    person_phone[ph_owner, ph_pos] = np.arange(len(ph_owner))
    foreign = rng.random(len(ph_owner)) < 0.05
    ph_country = np.where(foreign, rng.integers(0, len(COUNTRY_CODES), len(ph_owner)), people.country[ph_owner])
    foreign &= ph_country != people.country[ph_owner]
    u_pre = rng.random(len(ph_owner))
    digits = rng.integers(0, 10, size=(len(ph_owner), 8))
    variants: list[str] = []
    used: set[str] = set()
    for i in range(len(ph_owner)):
        c = COUNTRIES[COUNTRY_CODES[ph_country[i]]]
        prefix, nd = c[4][int(u_pre[i] * len(c[4]))]
        nsn = prefix + "".join(map(str, digits[i, :nd]))
        while c[1] + nsn in used:  # unique numbers (a rare clash gets its last digit bumped)
            nsn = nsn[:-1] + str((int(nsn[-1]) + 1) % 10)
        used.add(c[1] + nsn)
        variants += phone_variants(c[1], nsn, c[2], bool(foreign[i]))
    return person_phone, np.array(variants + JUNK_PHONES, dtype=object)


def email_variants(local: str, domain: str, tag: str, r: int) -> list[str]:
    """Seven ways one mailbox gets typed (index 0 is the clean one)."""
    gmail = domain == "gmail.com"
    cap = ".".join(x.capitalize() for x in local.split(".")) + "@" + domain.capitalize()
    if gmail:
        if "." in local:
            dots = local.replace(".", "")
        else:
            k = 1 + r % max(1, len(local) - 2)
            dots = local[:k] + "." + local[k:]
        v4 = f"{dots}@gmail.com"
        v5 = f"{local}@googlemail.com"
    else:
        v4 = f"{local.capitalize()}@{domain.upper()}"
        v5 = f"{local}+{tag}2@{domain}"
    return [
        f"{local}@{domain}",
        cap,
        f" {local}@{domain} ",
        f"{local}+{tag}@{domain}",
        v4,
        v5,
        f"{local}@{domain}".upper(),
    ]


def phone_variants(cc: str, nsn: str, trunk: str, international_only: bool) -> list[str]:
    """Eight ways one number gets typed (index 0 is E.164)."""
    a, b, c = nsn[:3], nsn[3:6], nsn[6:]
    v = [
        f"+{cc}{nsn}",
        f"+{cc} {a} {b} {c}",
        f"00{cc}{nsn}",
        f"{trunk}{nsn}",
        f"{trunk}{a} {b} {c}",
        f"{trunk}{a}-{b}-{c}",
        f"({trunk}{a}) {b} {c}",
        f"+{cc} ({a}) {b}-{c}",
    ]
    if international_only:
        v[3], v[4], v[5], v[6] = f"00{cc} {a} {b} {c}", f"+{cc}-{a}-{b}-{c}", f"+{cc}{nsn}", f"00 {cc} {nsn}"
    return v
