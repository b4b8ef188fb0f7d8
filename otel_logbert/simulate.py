"""The demo's synthetic service system: a small OpenTelemetry-instrumented web shop.

Seven services (``SERVICES``) serve six kinds of requests (``FLOWS``). Every request is a trace: each
service hop gets its own span, and every log line carries the trace id, the hop's span id, the
service name, a severity and a timestamp, like a record from an OTel SDK's log bridge. Bodies carry
the variables real services log (user and order ids, SKUs, amounts, durations, IP addresses, hashes),
which masking and Drain must normalise.

    system = ServiceSystem(seed=7)
    train = system.traces(2500, stream="train")                    # normal traffic only
    live = system.traces(1000, stream="live", fault_rate=0.12)     # normal + injected faults
    for record in interleave(live, background=system.background(live)):
        ...                                                        # time order, traces overlap

Normal traffic varies the way production does: optional steps (anonymous browsing, cache hit or
miss, digital orders without shipping), retries that succeed within normal limits (0-2), 1-6 items
per cart, and rare but normal outcomes (wrong password, card declined, product not found).

Injected faults (``FAULTS``), each recorded on its trace as ground truth (``Trace.fault``), are the
kinds of problems that show in the sequence of log messages of a request:

- ``missing_step``: a step that always happens is skipped (an order confirmed without a payment
  authorisation; a login token issued without checking the credentials);
- ``retry_storm``: a dependency keeps timing out and the caller retries 6-12 times (normal: 0-2);
- ``reordering``: steps happen in the wrong order (an order confirmed or shipped before it is paid,
  a cart updated before the stock check);
- ``error_path``: a failure deep in the call chain propagates up (a database deadlock or an exhausted
  connection pool ending in an HTTP 5xx);
- ``unseen_message``: an otherwise normal request logs a message never seen in normal traffic (a
  panic, a corrupted cache entry, a TLS failure).

Faults that change only values (a slow database, a wrong amount) leave the message sequence as it
is: masking turns those values into placeholders, so they are invisible to a session model by
construction, and the simulator does not inject them.

Everything is deterministic for a seed: ids, timestamps (from ``start_unix_nano``), flows, faults.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

SERVICES = ("frontend", "auth", "checkout", "payment", "inventory", "shipping", "db-proxy")
# Request mix (share of traces).
FLOWS: dict[str, float] = {
    "browse": 0.26,
    "product": 0.14,
    "login": 0.10,
    "cart": 0.16,
    "checkout": 0.24,
    "order_status": 0.10,
}
FAULTS = ("missing_step", "retry_storm", "reordering", "error_path", "unseen_message")
# Flows each fault can hit (unseen_message: any flow).
FAULT_FLOWS: dict[str, tuple[str, ...]] = {
    "missing_step": ("checkout", "login"),
    "retry_storm": ("checkout", "browse"),
    "reordering": ("checkout", "cart"),
    "error_path": ("checkout", "login"),
    "unseen_message": tuple(FLOWS),
}
SEVERITY_NUMBERS = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}
DEFAULT_START_UNIX_NANO = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
REQUESTS_PER_SECOND = 40.0  # mean arrival rate of simulated requests (traces overlap in time)
MAX_NORMAL_RETRIES = 2

_CATEGORIES = ("shoes", "shirts", "bags", "watches", "jackets", "hats", "socks", "belts")
_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
          "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara")
_CURRENCIES = ("USD", "EUR", "GBP")
_CARDS = ("visa", "mastercard", "amex")
_CARRIERS = ("dhl", "ups", "fedex")
_AGENTS = ("Mozilla/5.0", "okhttp/4.12.0", "curl/8.5.0", "python-requests/2.32")

# Messages that no normal request ever logs (``unseen_message``), as (severity, body template).
_UNSEEN: tuple[tuple[str, str], ...] = (
    ("ERROR", "panic: runtime error: index out of range [{n}] with length {n}"),
    ("WARN", "cache entry corrupted for key=catalog:{cat}:{n}, checksum mismatch, evicting"),
    ("ERROR", "java.lang.NullPointerException: Cannot invoke \"Cart.getItems()\" because \"cart\" is null"),
    ("ERROR", "TLS handshake with {ip}:443 failed: x509: certificate has expired or is not yet valid"),
    ("WARN", "GC overhead limit approaching: heap used {pct}% after full collection, pause {ms}ms"),
    ("ERROR", "unexpected EOF reading response body from upstream {ip}:8080 after {n} bytes"),
)


@dataclass(frozen=True)
class SimRecord:
    """One log line. ``trace_id`` 0 = emitted outside any request (background); ids are integers
    as the OTel API takes them (128-bit trace id, 64-bit span id)."""

    time_unix_nano: int
    service: str
    severity: str  # DEBUG | INFO | WARN | ERROR
    body: str
    trace_id: int = 0
    span_id: int = 0

    @property
    def severity_number(self) -> int:
        return SEVERITY_NUMBERS[self.severity]


@dataclass
class Trace:
    """One request: its log lines in time order and the ground truth (``fault`` None = normal)."""

    trace_id: int
    flow: str
    fault: str | None
    records: list[SimRecord]
    fault_detail: str = ""  # what exactly was injected, for the report

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"


@dataclass
class _Builder:
    """Writes the log lines of one trace: a clock that moves forward and one span per service hop."""

    rng: random.Random
    trace_id: int
    now: int  # unix nanos
    records: list[SimRecord] = field(default_factory=list)
    _spans: dict[str, int] = field(default_factory=dict)

    def hop(self, service: str) -> None:
        """A new call into ``service``: later lines of that service carry a fresh span id."""
        self._spans[service] = self.rng.getrandbits(64) | 1
        self.wait(0.2, 2.0)

    def wait(self, low_ms: float, high_ms: float) -> None:
        self.now += int(self.rng.uniform(low_ms, high_ms) * 1_000_000)

    def log(self, service: str, body: str, severity: str = "INFO") -> None:
        if service not in self._spans:
            self.hop(service)
        self.wait(0.05, 3.0)
        self.records.append(SimRecord(self.now, service, severity, body, self.trace_id, self._spans[service]))


class ServiceSystem:
    """The shop. ``traces`` and ``background`` are pure functions of (seed, arguments)."""

    def __init__(self, seed: int = 0, start_unix_nano: int = DEFAULT_START_UNIX_NANO) -> None:
        self.seed = seed
        self.start_unix_nano = start_unix_nano

    def traces(self, n: int, stream: str = "train", fault_rate: float = 0.0) -> list[Trace]:
        """``n`` requests of the stream called ``stream`` (different names give independent samples).

        ``round(n * fault_rate)`` of them carry a fault, spread evenly over ``FAULTS`` and placed at
        random; the rest are normal. Raises ``ValueError`` for n < 0 or a rate outside [0, 1].
        """
        if n < 0 or not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"need n >= 0 and 0 <= fault_rate <= 1, got n={n}, fault_rate={fault_rate}")
        rng = random.Random(f"otel-logbert-sim/{self.seed}/{stream}")
        n_faulty = round(n * fault_rate)
        faults: list[str | None] = [FAULTS[i % len(FAULTS)] for i in range(n_faulty)]
        faults += [None] * (n - n_faulty)
        rng.shuffle(faults)
        flow_names, weights = list(FLOWS), list(FLOWS.values())
        now = self.start_unix_nano
        out = []
        for fault in faults:
            now += int(rng.expovariate(REQUESTS_PER_SECOND) * 1e9)
            flows = flow_names if fault is None else list(FAULT_FLOWS[fault])
            flow = rng.choices(flows, weights=[FLOWS[f] for f in flows] if fault else weights)[0]
            out.append(_simulate(rng, flow, fault, now))
        return out

    def background(self, traces: list[Trace], every: int = 50) -> list[SimRecord]:
        """Lines outside any request (health checks, pool statistics), about one per ``every``
        traces, timed within the span of ``traces``. They have no trace id (unsessioned)."""
        if not traces:
            return []
        rng = random.Random(f"otel-logbert-sim/{self.seed}/background/{traces[0].trace_id}")
        first, last = traces[0].records[0].time_unix_nano, traces[-1].records[-1].time_unix_nano
        out = []
        for _ in range(max(1, len(traces) // every)):
            t = rng.randint(first, last)
            service = rng.choice(SERVICES)
            if service == "db-proxy":
                body = (f"connection pool stats active={rng.randint(1, 12)} idle={rng.randint(2, 20)} "
                        f"waiting=0 max=32")
            else:
                body = f"health check passed status=SERVING latency={rng.randint(1, 9)}ms"
            out.append(SimRecord(t, service, "DEBUG", body))
        return sorted(out, key=lambda r: r.time_unix_nano)


def interleave(traces: Iterable[Trace], background: Iterable[SimRecord] = ()) -> Iterator[SimRecord]:
    """All records of ``traces`` and ``background`` in timestamp order (ties keep input order):
    what the services emit when their requests overlap in time."""
    streams: list[Iterable[SimRecord]] = [t.records for t in traces]
    streams.append(sorted(background, key=lambda r: r.time_unix_nano))
    return heapq.merge(*streams, key=lambda r: r.time_unix_nano)


# --- flows -------------------------------------------------------------------------------------------


def _simulate(rng: random.Random, flow: str, fault: str | None, start: int) -> Trace:
    b = _Builder(rng, rng.getrandbits(128) | 1, start)
    detail = _FLOW_FUNCTIONS[flow](b, fault)
    if fault == "unseen_message":
        detail = _insert_unseen(b)
    return Trace(b.trace_id, flow, fault, b.records, detail or "")


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _hex(rng: random.Random, digits: int) -> str:
    """A hex id with at least one letter and one digit (what masking recognises as an id)."""
    value = f"{rng.getrandbits(4 * digits):0{digits}x}"
    return "a" + value[1:-1] + "7" if value.isdigit() or value.isalpha() else value


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _user(rng: random.Random) -> str:
    return f"u-{rng.randint(10000, 99999)}"


def _request(b: _Builder, method: str, route: str) -> None:
    rng = b.rng
    b.log("frontend", f"{method} {route} received from {_ip(rng)} request_id={_uuid(rng)} "
                      f"agent={rng.choice(_AGENTS)}")


def _response(b: _Builder, method: str, route: str, status: int, started: int) -> None:
    took = max(1, (b.now - started) // 1_000_000 + b.rng.randint(0, 3))
    severity = "ERROR" if status >= 500 else "WARN" if status >= 400 else "INFO"
    b.log("frontend", f"{method} {route} completed status={status} in {took}ms", severity)


def _verify_session(b: _Builder, user: str) -> None:
    b.hop("auth")
    b.log("auth", f"session token verified for {user} token_hash={_hex(b.rng, 16)} ttl={b.rng.randint(60, 3600)}s")


def _db(b: _Builder, op: str, table: str, rows: int) -> None:
    b.hop("db-proxy")
    b.wait(0.5, 8.0)
    b.log("db-proxy", f"query ok db=shop op={op} table={table} rows={rows} took={b.rng.randint(1, 40)}ms", "DEBUG")


def _db_with_retries(b: _Builder, op: str, table: str, rows: int, retries: int) -> None:
    """A query that first fails ``retries`` times on a refused connection, then succeeds."""
    for attempt in range(1, retries + 1):
        b.hop("db-proxy")
        b.wait(1.0, 5.0)
        b.log("db-proxy", f"connection to 10.0.8.{b.rng.randint(2, 9)}:5432 refused, retrying attempt={attempt} "
                          f"backoff={50 * 2 ** min(attempt, 5)}ms", "WARN")
    _db(b, op, table, rows)


def _browse(b: _Builder, fault: str | None) -> str:
    rng, start = b.rng, b.now
    category, page = rng.choice(_CATEGORIES), rng.randint(1, 12)
    route = f"/api/products?category={category}&page={page}"
    _request(b, "GET", route)
    if rng.random() < 0.65:  # logged-in users; the rest browse anonymously
        _verify_session(b, _user(rng))
    b.hop("inventory")
    b.log("inventory", f"listing products category={category} page={page} page_size=24")
    detail = ""
    if rng.random() < 0.7 and fault != "retry_storm":  # the storm needs the cache-miss path
        b.log("inventory", f"cache hit key=catalog:{category}:{page} age={rng.randint(1, 300)}s", "DEBUG")
    else:
        b.log("inventory", f"cache miss key=catalog:{category}:{page}, loading from database", "DEBUG")
        retries = rng.randint(1, MAX_NORMAL_RETRIES) if rng.random() < 0.1 else 0
        if fault == "retry_storm":
            retries = rng.randint(6, 12)
            detail = f"database connection refused {retries} times before the catalog query succeeded"
        _db_with_retries(b, "SELECT", "products", rng.randint(0, 24), retries)
        b.log("inventory", f"cache filled key=catalog:{category}:{page} entries={rng.randint(1, 24)}", "DEBUG")
    _response(b, "GET", "/api/products", 200, start)
    return detail


def _product(b: _Builder, fault: str | None) -> str:
    rng, start = b.rng, b.now
    sku = f"SKU-{rng.randint(10000, 99999)}"
    _request(b, "GET", f"/api/products/{sku}")
    b.hop("inventory")
    if rng.random() < 0.6:
        b.log("inventory", f"cache hit key=product:{sku} age={rng.randint(1, 300)}s", "DEBUG")
    else:
        _db(b, "SELECT", "products", 1 if rng.random() > 0.05 else 0)
    if rng.random() < 0.05:
        b.log("inventory", f"product {sku} not found", "WARN")
        _response(b, "GET", "/api/products/{sku}", 404, start)
        return ""
    b.log("inventory", f"stock level for {sku}: {rng.randint(0, 500)} units in warehouse wh-{rng.randint(1, 4)}")
    if rng.random() < 0.5:
        b.hop("shipping")
        b.log("shipping", f"delivery estimate for zone {rng.randint(1, 9)}: {rng.randint(1, 7)} days "
                          f"via {rng.choice(_CARRIERS)}")
    _response(b, "GET", "/api/products/{sku}", 200, start)
    return ""


def _login(b: _Builder, fault: str | None) -> str:
    rng, start = b.rng, b.now
    name, user = rng.choice(_USERS), _user(rng)
    _request(b, "POST", "/api/login")
    b.hop("auth")
    b.log("auth", f"login attempt for user={name} method={rng.choice(['password', 'password', 'sso'])}")
    detail = ""
    if fault == "error_path":
        b.hop("db-proxy")
        b.wait(20, 200)
        b.log("db-proxy", f"connection pool exhausted: 32/32 in use, waited {rng.randint(1000, 5000)}ms", "ERROR")
        b.log("auth", f"credential lookup for user={name} failed: upstream db-proxy unavailable", "ERROR")
        _response(b, "POST", "/api/login", 500, start)
        return "database connection pool exhausted; the login failed with HTTP 500"
    if fault == "missing_step":
        detail = "token issued without the credential lookup and password check"
    else:
        _db(b, "SELECT", "users", 1)
        b.log("auth", f"password hash verified for {user} in {rng.randint(40, 120)}ms", "DEBUG")
        if rng.random() < 0.08:
            b.log("auth", f"login failed for user={name}: invalid password (attempt {rng.randint(1, 3)})", "WARN")
            _response(b, "POST", "/api/login", 401, start)
            return ""
    b.log("auth", f"token issued for {user} expires_in=3600s token_hash={_hex(rng, 16)}")
    _db(b, "INSERT", "sessions", 1)
    _response(b, "POST", "/api/login", 200, start)
    return detail


def _cart(b: _Builder, fault: str | None) -> str:
    rng, start = b.rng, b.now
    user, sku, qty = _user(rng), f"SKU-{rng.randint(10000, 99999)}", rng.randint(1, 3)
    items = rng.randint(1, 6)
    _request(b, "POST", "/api/cart/items")
    _verify_session(b, user)

    def stock_check() -> None:
        b.hop("inventory")
        b.log("inventory", f"stock check {sku} qty={qty}: available={rng.randint(qty, 400)}")

    def update() -> None:
        b.hop("checkout")
        b.log("checkout", f"cart updated for {user}: added {sku} x{qty}, {items} items in cart")
        _db(b, "UPSERT", "carts", 1)

    if fault == "reordering":
        update()
        stock_check()
        detail = "cart updated before the stock check"
    else:
        stock_check()
        update()
        detail = ""
    _response(b, "POST", "/api/cart/items", 200, start)
    return detail


def _order_status(b: _Builder, fault: str | None) -> str:
    rng, start = b.rng, b.now
    order = _uuid(rng)
    _request(b, "GET", f"/api/orders/{order}")
    _verify_session(b, _user(rng))
    _db(b, "SELECT", "orders", 1)
    if rng.random() < 0.85:
        b.hop("shipping")
        b.log("shipping", f"tracking lookup order={order} carrier={rng.choice(_CARRIERS)} "
                          f"status={rng.choice(['label_created', 'in_transit', 'out_for_delivery', 'delivered'])}")
    else:
        b.log("frontend", f"order {order} is digital, no shipment to track", "DEBUG")
    _response(b, "GET", "/api/orders/{id}", 200, start)
    return ""


def _checkout_deadlock(b: _Builder, skus: list[str], order: str, start: int) -> str:
    """A database deadlock while reserving stock: inventory fails, checkout aborts, HTTP 503."""
    rng = b.rng
    failing = rng.randrange(len(skus))
    for i, sku in enumerate(skus):
        b.hop("inventory")
        b.log("inventory", f"reserving {sku} qty={rng.randint(1, 3)} for order {order}")
        if i == failing:
            b.hop("db-proxy")
            b.wait(50, 400)
            b.log("db-proxy", f"query failed db=shop op=UPDATE table=stock: deadlock detected, "
                              f"transaction {rng.randint(100000, 999999)} rolled back", "ERROR")
            b.log("inventory", f"reservation of {sku} failed: database error, rolling back", "ERROR")
            b.log("checkout", f"order {order} aborted: inventory reservation failed", "ERROR")
            _response(b, "POST", "/api/checkout", 503, start)
            return f"deadlock while reserving item {i + 1} of {len(skus)}; checkout answered 503"
        _db(b, "UPDATE", "stock", 1)
        b.log("inventory", f"reserved {sku} for order {order}")
    raise AssertionError("unreachable")


def _ship(b: _Builder, order: str, currency: str, digital: bool) -> None:
    """Shipping of a checkout: a quote and a label, or nothing for digital goods."""
    rng = b.rng
    b.hop("shipping")
    if digital:
        b.log("shipping", f"order {order} contains digital goods only, no shipment needed")
        return
    carrier = rng.choice(_CARRIERS)
    b.log("shipping", f"quote for order {order}: {carrier} cost={rng.uniform(3, 40):.2f} {currency}")
    b.log("shipping", f"label created carrier={carrier} tracking=1Z{rng.getrandbits(40):010X}")


def _checkout(b: _Builder, fault: str | None) -> str:
    """Order -> reserve each item -> authorise payment -> ship -> persist -> confirm."""
    rng, start = b.rng, b.now
    user, order = _user(rng), _uuid(rng)
    skus = [f"SKU-{rng.randint(10000, 99999)}" for _ in range(rng.randint(1, 6))]
    amount = f"{rng.uniform(5, 900):.2f}"
    currency = rng.choice(_CURRENCIES)
    digital = rng.random() < 0.1
    _request(b, "POST", "/api/checkout")
    _verify_session(b, user)
    b.hop("checkout")
    b.log("checkout", f"creating order {order} for {user} items={len(skus)} total={amount} {currency}")

    if fault == "error_path":
        return _checkout_deadlock(b, skus, order, start)

    def reserve() -> None:
        for sku in skus:
            b.hop("inventory")
            b.log("inventory", f"reserving {sku} qty={rng.randint(1, 3)} for order {order}")
            _db(b, "UPDATE", "stock", 1)
            b.log("inventory", f"reserved {sku} for order {order}")

    def pay(retries: int, may_decline: bool = True) -> bool:
        b.hop("checkout")
        b.log("checkout", f"requesting payment authorization for order {order} amount={amount} {currency}")
        b.hop("payment")
        card = f"{rng.choice(_CARDS)} ****{rng.randint(1000, 9999)}"
        b.log("payment", f"authorizing {card} amount={amount} {currency} merchant=m-{rng.randint(100, 999)}")
        for attempt in range(1, retries + 1):
            b.wait(500, 3000)
            b.log("payment", f"gateway timeout after 3000ms on attempt {attempt}", "WARN")
            b.log("checkout", f"payment call failed, retrying in {100 * 2 ** min(attempt, 5)}ms "
                              f"(attempt {attempt + 1})", "WARN")
            b.hop("payment")
        if may_decline and rng.random() < 0.05:
            b.log("payment", f"card declined: insufficient_funds auth_ref={_hex(rng, 12)}", "WARN")
            b.log("checkout", f"order {order} payment declined, releasing reservations", "WARN")
            for sku in skus:
                b.hop("inventory")
                b.log("inventory", f"released {sku} for order {order}")
            return False
        b.log("payment", f"authorization approved auth_code={_hex(rng, 10)} risk_score={rng.randint(1, 40)}")
        b.log("checkout", f"payment authorized for order {order}")
        return True

    def ship() -> None:
        _ship(b, order, currency, digital)

    def confirm() -> None:
        _db(b, "INSERT", "orders", 1 + len(skus))
        b.log("checkout", f"order {order} confirmed for {user}, {len(skus)} items, {amount} {currency}")
        b.hop("frontend")
        b.log("frontend", f"order confirmation email queued for {user} order={order}", "DEBUG")

    reserve()
    retries = rng.randint(1, MAX_NORMAL_RETRIES) if rng.random() < 0.12 else 0
    detail = ""
    if fault == "retry_storm":
        retries = rng.randint(6, 12)
        detail = f"payment gateway timed out {retries} times before the authorization"
    if fault == "missing_step":
        ship()
        confirm()
        detail = "order confirmed without any payment authorization"
    elif fault == "reordering":
        if rng.random() < 0.5:
            ship()
            confirm()
            pay(0, may_decline=False)
            detail = "order shipped and confirmed before the payment was authorized"
        else:
            ship()
            pay(0, may_decline=False)
            confirm()
            detail = "shipping label created before the payment was authorized"
    else:
        if not pay(retries):
            _response(b, "POST", "/api/checkout", 402, start)
            return detail
        ship()
        confirm()
    _response(b, "POST", "/api/checkout", 201, start)
    return detail


def _insert_unseen(b: _Builder) -> str:
    """Put one never-seen message at a random point inside the request (not first, not last)."""
    rng = b.rng
    severity, template = rng.choice(_UNSEEN)
    body = template.format(n=rng.randint(2, 64), cat=rng.choice(_CATEGORIES), ip=_ip(rng),
                           pct=rng.randint(91, 99), ms=rng.randint(300, 4000))
    at = rng.randint(1, max(1, len(b.records) - 1))
    before = b.records[at - 1]
    after_ns = b.records[at].time_unix_nano if at < len(b.records) else before.time_unix_nano + 2_000_000
    t = before.time_unix_nano + max(1, (after_ns - before.time_unix_nano) // 2)
    b.records.insert(at, SimRecord(t, before.service, severity, body, b.trace_id, before.span_id))
    return f"{before.service} logged a never-seen message: {body}"


_FLOW_FUNCTIONS: dict[str, Callable[[_Builder, str | None], str]] = {
    "browse": _browse,
    "product": _product,
    "login": _login,
    "cart": _cart,
    "checkout": _checkout,
    "order_status": _order_status,
}
