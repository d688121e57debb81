"""Behaviour blocks: each adds one kind of activity of everyone to the event log.

  * purchases: orders on each buyer's cadence, with intent bursts (1-4 sessions in the 3-4 weeks before,
    denser and with more carts near it); price hunters view the product at 2-3 partners within 4 days
    before buying and buy at the cheapest in ~85% of orders (others compare in ~4%); category lovers order
    mostly in their favourite category; life events lead to a first purchase in the new category;
  * browsing: background sessions by affinity, and "getting ready" sessions before a life-event purchase;
  * backbone logins: every identified person logs in on each of their devices (and with each email);
  * subscriptions and campaigns: `message_sent` carries click_token + subscriber_id + email or phone;
    `message_click` carries the token + the clicking device and opens a landing session; some clicks come
    from a forwardee's device;
  * shared devices: public devices (mostly anonymous, sometimes a login) and family tablets.

They draw from the world's one random sequence, so their order (`BEHAVIOURS`) is part of the seed's output.
"""

from __future__ import annotations

import numpy as np

from jobs.contract.schema import PAYMENT_METHODS
from jobs.synthetic.reference import (
    ADD_TO_CART,
    CHANNEL_TRAFFIC,
    COUNTRY_CODES,
    DAY,
    JUNK_EMAIL_W,
    JUNK_EMAILS,
    JUNK_PHONES,
    MAX_SLOTS,
    MESSAGE_CLICK,
    MESSAGE_SENT,
    PAYMENT_W,
    PURCHASE,
    SUBSCRIBE,
    TOPS,
)
from jobs.synthetic.sampling import explode, time_of_day, times
from jobs.synthetic.sessions import EventLog
from jobs.synthetic.world import World


def browsing(w: World, ev: EventLog) -> None:
    """Background browsing by affinity; life-event people start browsing their new category."""
    rng, days = w.rng, w.days
    n = rng.poisson(w.people.browse_rate * days)
    person, _ = explode(n)
    start = times(rng, len(person), 0, days)
    top = w.pick_top(person)
    explore = rng.random(len(person)) < 0.05  # a look at any carried category
    top = np.where(explore, rng.integers(0, len(TOPS), len(person)), top)
    # life events: after the day, a good share of browsing goes to the new category
    life = w.people.life_cat[person] >= 0
    after = life & (start >= w.people.life_day[person] * DAY) & (rng.random(len(person)) < 0.4)
    top = np.where(after, w.people.life_cat[person], top)
    # extra "getting ready" sessions: rising towards the first purchase in the new category
    lp = np.flatnonzero(w.people.life_cat >= 0)
    k = rng.poisson(7.0, len(lp))
    lpp, _ = explode(k)
    who = lp[lpp]
    lead = np.where(w.people.life_buys[who], w.people.life_first[who] - w.people.life_day[who], 40.0)
    span = lead * rng.random(len(who)) ** 0.5
    extra_start = (w.people.life_day[who] + span) * DAY + time_of_day(rng, len(who))
    getting_ready = np.r_[np.zeros(len(person), bool), np.ones(len(who), bool)]
    person = np.concatenate([person, who])
    start = np.concatenate([start, extra_start])
    top = np.concatenate([top, w.people.life_cat[who]])
    slot = w.pick_slot(person, top)
    partner = w.people.slots[person, slot]
    ok = partner >= 0
    carried = w.stores.carry[np.maximum(partner, 0), top]
    top = np.where(carried, top, w.people.fav[person])
    person, start, top, slot, partner = person[ok], start[ok], top[ok], slot[ok], partner[ok]
    getting_ready = getting_ready[ok]
    leaf = w.pick_leaf(top)
    anon = w.people.anon[person]
    logged = ~anon & w.ids.cust[person, slot] & (rng.random(len(person)) < 0.35)
    login = logged & (rng.random(len(person)) < 0.3)
    n_views = np.minimum(rng.geometric(0.4, len(person)), 12)
    ev.web(
        person=person,
        slot=slot,
        partner=partner,
        device=w.pick_device(person),
        start=start,
        n_views=n_views,
        leaf=leaf,
        cart_p=np.where(getting_ready, 0.12, 0.05),
        logged=logged,
        login=login,
    )


def backbone_logins(w: World, ev: EventLog) -> None:
    """Everyone identified logs in on each of their devices at least once (and with each email)."""
    rng = w.rng
    rows, cols = np.nonzero((w.ids.person_dev >= 0) & ~w.people.anon[:, None])
    device = w.ids.person_dev[rows, cols]
    email = w.ids.person_email[rows, 0]
    second = np.flatnonzero(w.ids.person_email[:, 1] >= 0)
    rows = np.concatenate([rows, second])
    device = np.concatenate([device, w.ids.person_dev[second, 0]])
    email = np.concatenate([email, w.ids.person_email[second, 1]])
    slot = np.where(rng.random(len(rows)) < 0.6, 0, w.pick_slot(rows))
    slot = np.where(w.ids.cust[rows, slot], slot, 0)
    n = len(rows)
    ev.web(
        person=rows,
        slot=slot,
        partner=w.people.slots[rows, slot],
        device=device,
        start=times(rng, n, 0, w.days),
        n_views=rng.integers(0, 3, n),
        leaf=w.pick_leaf(w.pick_top(rows)),
        logged=np.ones(n, bool),
        login=np.ones(n, bool),
        login_email=email,
    )


def purchases(w: World, ev: EventLog) -> None:
    """Orders with their intent bursts (views, carts rising before), price comparisons and life events."""
    rng, days = w.rng, w.days
    buyers = np.flatnonzero(w.people.buyer)
    cad = w.people.cadence[buyers]
    M = int(np.ceil(days / 10.0 * 1.6)) + 3
    gaps = rng.gamma(3.0, 1.0, size=(len(buyers), M)) * (cad / 3.0)[:, None]
    t = -rng.random(len(buyers))[:, None] * cad[:, None] + np.cumsum(gaps, axis=1)
    keep = (t >= -21) & (t < days + 0)  # orders after the window still show their intent before its end
    rr, cc = np.nonzero(keep)
    person = buyers[rr]
    tday = t[rr, cc]
    # category of each order
    top = w.pick_top(person)
    lov = w.people.lover[person] & (rng.random(len(person)) < 0.85)
    top = np.where(lov, w.people.fav[person], top)
    life = w.people.life_buys[person] & (tday > w.people.life_first[person]) & (rng.random(len(person)) < 0.25)
    top = np.where(life, w.people.life_cat[person], top)
    # the first order in a life-event category, 1-5 weeks after the event (75% of them)
    lp = np.flatnonzero(w.people.life_buys)
    person = np.concatenate([person, lp])
    tday = np.concatenate([tday, w.people.life_first[lp]])
    top = np.concatenate([top, w.people.life_cat[lp]])
    keep = (tday >= -21) & (tday < days + 30)
    person, tday, top = person[keep], tday[keep], top[keep]
    n = len(person)
    leaf = w.pick_leaf(top)
    product = w.pick_product(person, leaf, loyal_scale=1.2)
    t_buy = np.floor(tday) * DAY + time_of_day(rng, n)

    # where: a store of theirs that carries the category; hunters (and a few others) compare 2-3 stores
    slots_p = w.people.slots[person]
    s0 = np.where(slots_p >= 0, slots_p, 0)
    ok = w.stores.carry[s0, top[:, None]] & (slots_p >= 0)
    n_ok = ok.sum(axis=1)
    compare = (n_ok >= 2) & (rng.random(n) < np.where(w.people.hunter[person], 0.9, 0.04))
    n_cmp = np.where(compare, np.minimum(n_ok, 2 + (rng.random(n) < 0.4)), 0)
    # random order of the eligible slots; the first n_cmp are compared
    keys = np.where(ok, rng.random((n, MAX_SLOTS)) + w.people.slot_w[person] * 0.5, -1.0)
    order = np.argsort(-keys, axis=1, kind="stable")
    cmp_slots = np.where(np.arange(MAX_SLOTS)[None, :] < n_cmp[:, None], order, -1)
    cmp_partner = np.where(cmp_slots >= 0, w.people.slots[person[:, None], np.maximum(cmp_slots, 0)], -1)
    cmp_price = np.where(cmp_slots >= 0, w.stores.price[product[:, None], np.maximum(cmp_partner, 0)], np.inf)
    cheapest = cmp_slots[np.arange(n), cmp_price.argmin(axis=1)]
    other = cmp_slots[np.arange(n), (rng.random(n) * np.maximum(n_cmp, 1)).astype(int)]
    buy_slot_cmp = np.where(rng.random(n) < 0.85, cheapest, other)
    buy_slot = np.where(compare, buy_slot_cmp, w.pick_slot(person, top))
    buy_partner = w.people.slots[person, buy_slot]

    # intent burst: 1-4 sessions in the 3 weeks before, denser and with more carts near the order
    n_pre = np.minimum(1 + rng.poisson(0.8 * w.people.intent[person]), 4)
    n_pre = np.maximum(n_pre, n_cmp)
    o, k = explode(n_pre)
    delta = 24.0 * rng.random(len(o)) ** 2 * DAY + 600.0
    cmp_k = k < n_cmp[o]
    delta = np.where(cmp_k, rng.uniform(0.02, 4.0, len(o)) * DAY + 600.0, delta)
    pre_slot = np.where(
        cmp_k,
        cmp_slots[o, np.minimum(k, MAX_SLOTS - 1)],
        np.where(rng.random(len(o)) < 0.6, buy_slot[o], w.pick_slot(person[o], top[o])),
    )
    pre_partner = w.people.slots[person[o], pre_slot]
    pre_start = t_buy[o] - delta
    pp = person[o]
    near = 1.0 - np.minimum(delta / (24 * DAY), 1.0)
    logged = w.ids.cust[pp, pre_slot] & (rng.random(len(o)) < 0.3)
    ev.web(
        person=pp,
        slot=pre_slot,
        partner=pre_partner,
        device=w.pick_device(pp),
        start=pre_start,
        n_views=1 + rng.poisson(0.4 + 1.6 * near),
        leaf=leaf[o],
        focus=product[o],
        focus_p=0.3 + 0.4 * near,
        cart_p=0.03 + 0.15 * near,
        logged=logged,
        login=logged & (rng.random(len(o)) < 0.3),
    )

    # the order session: views, a cart, the order lines (with the identifiers typed at checkout)
    logged = w.ids.cust[person, buy_slot] & (rng.random(n) < 0.6)
    login = logged & (rng.random(n) < 0.4)
    device = w.pick_device(person)
    sess, end = ev.web(
        person=person,
        slot=buy_slot,
        partner=buy_partner,
        device=device,
        start=t_buy,
        n_views=1 + (rng.random(n) < 0.4),
        leaf=leaf,
        focus=product,
        focus_p=1.0,
        cart_p=0.05,
        logged=logged,
        login=login,
    )
    ev.add(
        ts=end - 100.0,
        etype=ADD_TO_CART,
        person=person,
        partner=buy_partner,
        session=sess,
        device=device,
        product=product,
        price=w.stores.price[product, buy_partner],
        qty=1,
        customer=np.where(logged, w.ids.cust_ids[person, buy_slot], -1),
    )
    n_lines = 1 + np.minimum(rng.poisson(0.45, n), 4)
    o, k = explode(n_lines)
    line_prod = np.where(k == 0, product[o], w.pick_product(person[o], w.pick_leaf(top[o])))
    qty = np.where(k == 0, 1, rng.choice([1, 1, 1, 2, 3], size=len(o)))
    order_ids = ev.n_orders + np.arange(n)
    ev.n_orders += n
    cust = np.where(logged, w.ids.cust_ids[person, buy_slot], -1)
    email = np.where(~logged | (rng.random(n) < 0.5), w.pick_email(person, 0.85), -1)
    email = np.where(rng.random(n) < 0.04, -1, email)  # a phone-only checkout
    email_c = w.ids.email_code(email)
    junk_e = rng.random(n) < 0.015
    j = rng.choice(len(JUNK_EMAILS), size=n, p=JUNK_EMAIL_W / JUNK_EMAIL_W.sum())
    email_c = np.where(junk_e, w.ids.junk_email_code(j), email_c)
    ph = w.ids.person_phone[person, np.where(rng.random(n) < 0.85, 0, 1)]
    ph = np.where(ph >= 0, ph, w.ids.person_phone[person, 0])
    phone = np.where((~logged | (rng.random(n) < 0.3)) & (rng.random(n) < 0.65), ph, -1)
    junk_p = rng.random(n) < 0.01
    phone_c = w.ids.phone_code(phone, junk=junk_p)
    # the valid-looking junk number is a Bulgarian habit; elsewhere people type zeros
    fake = w.ids.junk_phone_code(JUNK_PHONES.index("0888888888"))
    zeros = w.ids.junk_phone_code(JUNK_PHONES.index("0000000000"))
    phone_c = np.where((phone_c == fake) & (w.people.country[person] != COUNTRY_CODES.index("BG")), zeros, phone_c)
    pay = np.where(
        rng.random(n) < 0.8, w.people.pay_pref[person], rng.choice(len(PAYMENT_METHODS), size=n, p=PAYMENT_W)
    )
    ev.add(
        ts=end[o] - 60.0 + k * 0.5,
        etype=PURCHASE,
        person=person[o],
        partner=buy_partner[o],
        session=sess[o],
        device=device[o],
        product=line_prod,
        price=w.stores.price[line_prod, buy_partner[o]],
        qty=qty,
        order=order_ids[o],
        customer=cust[o],
        email=email_c[o],
        phone=phone_c[o],
        pay=pay[o],
    )


def subscriptions_and_campaigns(w: World, ev: EventLog) -> None:
    """Subscribe events, campaign sends, clicks (likelier for engaged people) and forwarded clicks."""
    rng, days, K = w.rng, w.days, len(w.stores.partner_ids)
    rows, cols = np.nonzero(w.ids.sub)
    partner = w.people.slots[rows, cols]
    chan = w.ids.sub_channel[rows, cols]
    email = w.ids.person_email[rows, 0]
    phone = w.ids.person_phone[rows, 0]
    sub_id = w.ids.sub_ids[rows, cols]
    # subscribing: early in the window for most (on a device of theirs)
    t_sub = times(rng, len(rows), -10, days * 0.7 * rng.random(len(rows)) ** 2)
    t_sub = np.maximum(t_sub, rng.uniform(0, 3 * DAY, len(rows)))
    device = w.pick_device(rows)
    sess, _ = ev.web(
        person=rows,
        slot=cols,
        partner=partner,
        device=device,
        start=t_sub,
        n_views=rng.integers(0, 3, len(rows)),
        leaf=w.pick_leaf(w.pick_top(rows)),
    )
    ev.add(
        ts=t_sub + rng.uniform(20, 200, len(rows)),
        etype=SUBSCRIBE,
        person=rows,
        partner=partner,
        session=sess,
        device=device,
        subscriber=sub_id,
        email=np.where(chan == 0, w.ids.email_code(email), -1),
        phone=np.where(chan > 0, w.ids.phone_code(phone), -1),
        traffic=0,
    )

    # campaigns: each partner sends about weekly, each to about half of its subscribers
    n_camp = np.maximum(1, rng.poisson(days / 8.0, K))
    camp_partner, _ = explode(n_camp)
    camp_t = np.floor(rng.random(len(camp_partner)) * days) * DAY + rng.uniform(9, 12, len(camp_partner)) * 3600
    camp_start = np.concatenate([[0], np.cumsum(n_camp)])
    # (subscriber, campaign of their partner) pairs
    sub_n = n_camp[partner]
    s, k = explode(sub_n)
    camp = camp_start[partner[s]] + k
    send_t = camp_t[camp] + rng.uniform(0, 1800, len(s))
    take = (rng.random(len(s)) < 0.28) & (send_t > t_sub[s] + 3600)
    s, send_t = s[take], send_t[take]
    n = len(s)
    tokens = ev.n_tokens + np.arange(n)
    ev.n_tokens += n
    p = rows[s]
    ev.add(
        ts=send_t,
        etype=MESSAGE_SENT,
        person=p,
        partner=partner[s],
        subscriber=sub_id[s],
        token=tokens,
        email=np.where(chan[s] == 0, w.ids.email_code(email[s]), -1),
        phone=np.where(chan[s] > 0, w.ids.phone_code(phone[s], clean=True), -1),
    )
    # clicks: own device (engaged people click more), forwarded to another person's device sometimes
    chan_f = np.array([1.0, 0.7, 1.3])[chan[s]]
    fwd = rng.random(n) < 0.006
    own = np.where(fwd, rng.random(n) < 0.7, rng.random(n) < w.people.engagement[p] * chan_f)
    households = {}
    for a, b in w.ids.households:
        households[a], households[b] = b, a
    ident = np.flatnonzero(~w.people.anon)
    other = ident[rng.integers(0, len(ident), n)]
    hh = np.array([households.get(int(x), -1) for x in p[fwd]], dtype=np.int64) if fwd.any() else np.zeros(0, int)
    fwd_to = other.copy()
    fwd_to[np.flatnonzero(fwd)] = np.where(hh >= 0, hh, other[fwd])
    fwd &= fwd_to != p
    clicks = []
    for mask, who in ((own, p), (fwd, fwd_to)):
        i = np.flatnonzero(mask)
        clicks.append((i, who[i]))
    ci = np.concatenate([c[0] for c in clicks])
    cp = np.concatenate([c[1] for c in clicks])
    m = len(ci)
    click_t = send_t[ci] + np.clip(rng.exponential(3 * 3600.0, m), 30, 3 * DAY)
    part = partner[s][ci]
    # the clicking person's slot at this partner, if they use it (forwardees often do not)
    match = w.people.slots[cp] == part[:, None]
    slot = np.where(match.any(axis=1), match.argmax(axis=1), -1)
    logged = (slot >= 0) & w.ids.cust[cp, np.maximum(slot, 0)] & (rng.random(m) < 0.3)
    top = w.pick_top(cp)
    any_carried = np.argmax(w.stores.carry[part] * rng.random((m, len(TOPS))), axis=1)
    top = np.where(w.stores.carry[part, top], top, any_carried)
    ev.web(
        person=cp,
        slot=slot,
        partner=part,
        device=w.pick_device(cp),
        start=click_t,
        n_views=rng.integers(0, 5, m),
        leaf=w.pick_leaf(top),
        logged=logged,
        first=MESSAGE_CLICK,
        token=tokens[ci],
        traffic=CHANNEL_TRAFFIC[chan[s][ci]],
    )


def shared_devices(w: World, ev: EventLog) -> None:
    """Public devices (mostly anonymous, sometimes a login) and family tablets (always logged in)."""
    rng, days = w.rng, w.days
    # public devices: people of the device's city, ~0.6 sessions a day per device
    n = rng.poisson(0.6 * days, w.ids.n_public)
    d, _ = explode(n)
    city = w.ids.public_city[d]
    by_city = np.argsort(w.people.city, kind="stable")
    city_sorted = w.people.city[by_city]
    lo = np.searchsorted(city_sorted, city, side="left")
    hi = np.searchsorted(city_sorted, city, side="right")
    person = by_city[lo + (rng.random(len(d)) * (hi - lo)).astype(np.int64)]
    slot = w.pick_slot(person)
    logged = ~w.people.anon[person] & w.ids.cust[person, slot] & (rng.random(len(d)) < 0.22)
    ev.web(
        person=person,
        slot=slot,
        partner=w.people.slots[person, slot],
        device=w.ids.public_dev[d],
        start=times(rng, len(d), 0, days),
        n_views=rng.integers(1, 7, len(d)),
        leaf=w.pick_leaf(w.pick_top(person)),
        logged=logged,
        login=logged,
        space=True,
    )
    # family tablets: both members, always logged in to their own account at their common store
    if len(w.ids.households):
        n = rng.poisson(0.08 * days, len(w.ids.households))
        h, _ = explode(n)
        person = w.ids.households[h, (rng.random(len(h)) < 0.5).astype(int)]
        k = w.people.slots[w.ids.households[h, 0], 0]
        slot = (w.people.slots[person] == k[:, None]).argmax(axis=1)
        ev.web(
            person=person,
            slot=slot,
            partner=k,
            device=w.ids.family_dev[h],
            start=times(rng, len(h), 0, days),
            n_views=rng.integers(1, 6, len(h)),
            leaf=w.pick_leaf(w.pick_top(person)),
            logged=np.ones(len(h), bool),
            login=rng.random(len(h)) < 0.3,
            space=True,
        )


BEHAVIOURS = (purchases, browsing, backbone_logins, subscriptions_and_campaigns, shared_devices)
