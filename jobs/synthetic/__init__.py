"""Synthetic cross-partner event logs in the input contract, with `true_person_id` ground truth.

Synthetic tooling, never on the production path (no stage imports it): one process, vectorised numpy,
deterministic per seed (same seed, same rows, same bytes). Events start 2026-01-01 00:00 UTC and span `days`.

    reference.py    fixed facts: calendar, weights, category tree, countries, junk contacts
    sampling.py     vectorised sampling helpers
    catalogue.py    products, brands and the partner stores with their prices
    people.py       the people and their persistent traits
    identifiers.py  devices, records, emails and phones, and the ways they get typed
    world.py        all of the above from one seed, and people's everyday choices
    sessions.py     the event log being built and web sessions
    behaviours.py   purchases, browsing, logins, campaigns, shared devices
    assembly.py     the contract table (`generate_events`)
    profiles.py     profiles: the cross-partner default, or a purchases-only retail log (one partner,
                    customer ids, cohorts that arrive and lapse)
    files.py        the event files (`write_events`)

What the data plants (figures measured at 20k people x 8 partners x 180 days: ~1.05M events, ~34k orders;
mix: product_view 46%, page_view 21%, message_sent 9%, add_to_cart 9%, login 5%, purchase 5%,
message_click 2%, subscribe 2%):

Identity traps
  * people with 1-3 devices (UUIDs stable across partners), 1-2 emails, 0-2 phones, a country (BG, RO, GR,
    DE, PL) and a city; each uses 1-5 of the K partners, has a customer record at some of them (customer and
    subscriber ids are per-partner number sequences: the same string at two partners is two people);
  * every device of an identified person sees at least one login (email + customer id), so it can be linked;
    ~4% of people are anonymous (one device, never identified);
  * emails as typed (about half of the values differ from their normal form): case changes, surrounding
    spaces, `+tags`, gmail dots, googlemail.com;
  * phones as typed: `+CC...`, `00CC...`, national with trunk 0, spaces, dashes, brackets; ~5% of phones
    are of another country than the person's (always typed internationally); every number is a valid
    mobile number, unique to its person;
  * junk contacts typed at checkout by many unrelated people: ~1.4% of orders carry a junk email, ~1% a
    junk phone; mostly the usual blocklist values, plus a few (`x@x.com`, `nomail@abv.bg`, `0888888888`
    typed in BG) that only a fan-out rule catches;
  * shared public devices (office / internet cafe, one per 400 people, ~100 people each, ~2.5% of rows):
    mostly anonymous browsing by people of that city, ~15% of sessions with a login by the person at the
    keyboard, so anonymous rows there belong to nobody identifiable;
  * family tablets (one household per 200 people): two people of a household, each always logged in with
    their own customer record at a store they both use (two customer ids at one partner on one device);
  * campaigns: `message_sent` carries click_token + subscriber_id + email or phone (no device, no session);
    `message_click` carries the token + the clicking device and opens a landing session; ~20% of messages
    are clicked, ~2.8% of clicks come from a forwardee's device (the recipient also clicked ~70% of those);
  * 5 partners in 8 send session_id, the others (p002, p004, p007, p010, ...) leave it null; no session has
    an inner gap of 30 minutes, and sessions of different people on one shared device are >= 40 minutes
    apart, so cutting per partner + device at 30 minutes never mixes people.

Behaviour (what look-alike segments can learn: persistent traits, not only recency/frequency/money)
  * a category tree (7 top categories, 31 leaves) with brands per top category; a product is sold at every
    partner carrying its top category (general stores carry all), at partner prices +-15% around its base;
  * per person: Dirichlet category affinities with ~35% of categories never touched, brand loyalty, a
    purchase cadence class (none 28% / rare / occasional / regular / frequent: gamma-spaced orders), a
    campaign engagement level (higher for frequent buyers) and a preferred payment method;
  * intent bursts: 1-4 sessions in the 3-4 weeks before each order, denser and with more carts near it;
  * price hunters (15% of people): view the product at 2-3 partners within 4 days before buying and buy
    at the cheapest in ~85% of orders (others compare in ~4% of orders);
  * category lovers (~15% of buyers): orders about monthly, 85% of them in the favourite category;
  * life events (20% of people who never touch home / toys / sports): from a date on they browse that
    category (with carts), and 75% of them buy in it for the first time 2-8 weeks later.
"""

from jobs.synthetic.assembly import SCHEMA, generate_events
from jobs.synthetic.files import write_events

__all__ = ["SCHEMA", "generate_events", "write_events"]
