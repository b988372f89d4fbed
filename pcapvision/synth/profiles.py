"""Traffic families: what each kind of software does on the network, as plans of connections.

A *unit* is one activity of one family on one host (a page visit, a C2 implant's check-ins over
the capture, a brute-force run). Each ``_plan_<family>`` function draws its parameters from the
distributions documented in its docstring and returns :class:`ConnectionPlan` objects: who
connects where, with which TLS client and server, and which application messages (plaintext
sizes and delays) flow. Nothing here touches TLS or packets; plans are pure functions of the
seeded random generator, which is what makes a seed reproduce flows, sizes, timings, addresses
and SNI exactly.

The :class:`Difficulty` preset sets how much the classes overlap on purpose: how often malware
mimics browsers (ClientHello, CDN-like SNI, CA-issued certificates, randomised sizes), how often
benign software looks odd (IoT/telemetry with self-signed certificates, minimal non-browser
ClientHellos, periodic check-ins), and how lossy the network is.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pcapvision.synth.tls import CLIENT_TO_SERVER as C2S
from pcapvision.synth.tls import SERVER_TO_CLIENT as S2C
from pcapvision.synth.tls import ClientHelloShape, ServerShape

NORMAL = "normal"
MALICIOUS = "malicious"


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    description: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("web-browsing", NORMAL, "page visits: parallel connections to a site, its CDN and third parties"),
        Family("api-polling", NORMAL, "small JSON exchanges at irregular intervals (some IoT/telemetry)"),
        Family("bulk-download", NORMAL, "one large download (capped by max_flow_kib)"),
        Family("video-streaming", NORMAL, "periodic large segment downloads on one connection"),
        Family("update-check", NORMAL, "periodic software update checks, mostly small answers"),
        Family("mail-tls", NORMAL, "IMAP over TLS (993) or SMTP submission over TLS (465)"),
        Family("c2-beacon", MALICIOUS, "periodic check-ins with jitter, one connection each"),
        Family("exfiltration", MALICIOUS, "large client-to-server bursts"),
        Family("reverse-shell", MALICIOUS, "long-lived connection, tiny commands and outputs both ways"),
        Family("brute-force", MALICIOUS, "many short login attempts against one server"),
        Family("cryptominer", MALICIOUS, "stratum JSON-RPC over TLS: periodic jobs and share submissions"),
        Family("port-scan", MALICIOUS, "SYN probes answered by RST/SYN-ACK or nothing, no payload"),
    ]
}
DNS_FAMILY = "dns"

# Default share of TCP flows per family: balanced classes; port scans kept small (no payload).
DEFAULT_MIX: dict[str, float] = {
    "web-browsing": 0.20, "api-polling": 0.08, "bulk-download": 0.04, "video-streaming": 0.04,
    "update-check": 0.07, "mail-tls": 0.07,
    "c2-beacon": 0.16, "exfiltration": 0.05, "reverse-shell": 0.05, "brute-force": 0.14,
    "cryptominer": 0.05, "port-scan": 0.05,
}


@dataclass(frozen=True)
class Difficulty:
    """Overlap knobs (probabilities) and network noise of a preset."""

    name: str
    mimic_browser: float  # malware sends a browser or mainstream-library ClientHello
    mimic_sni: float  # malware uses a CDN-like or plausible SNI instead of DGA/IP/none
    mimic_cert: float  # malware's server has a CA-issued certificate chain
    randomise_sizes: float  # beacons/miners randomise message sizes and timing jitter widely
    odd_normal: float  # benign software with minimal ClientHellos, self-signed certs, beacon-like timing
    loss_rate: float  # per data segment
    reorder_rate: float  # per data segment


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "realistic": Difficulty("realistic", 0.30, 0.35, 0.35, 0.5, 0.25, 0.005, 0.003),
    "hard": Difficulty("hard", 0.60, 0.65, 0.65, 0.8, 0.50, 0.02, 0.01),
}

# --- TLS client fingerprints ---------------------------------------------------------------------
_CHROME = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
           "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
           "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA")
_FIREFOX = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
            "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
            "ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
            "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA")
_SAFARI = ("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
           "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
           "ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:"
           "ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:"
           "AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:AES256-SHA:AES128-SHA")
_GO = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
       "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")

BROWSER_HELLOS = (
    ClientHelloShape("chrome-like", _CHROME, ("h2", "http/1.1"), browser_like=True),
    ClientHelloShape("firefox-like", _FIREFOX, ("h2", "http/1.1"), post_handshake_auth=False, browser_like=True),
    ClientHelloShape("safari-like", _SAFARI, ("h2", "http/1.1"), browser_like=True),
)
LIBRARY_HELLOS = (
    ClientHelloShape("python-like"),  # Python's own defaults
    ClientHelloShape("go-like", _GO, ("http/1.1",)),
    ClientHelloShape("okhttp-like", _CHROME, ("h2", "http/1.1"), session_tickets=False),
    ClientHelloShape("curl-like", "DEFAULT", ("h2", "http/1.1")),
)
MAIL_HELLO = ClientHelloShape("mail-client-like", _FIREFOX)
# Minimal, old-fashioned or bare ClientHellos: embedded TLS stacks and most implants.
MINIMAL_HELLOS = (
    ClientHelloShape("embedded-tls12", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                     "ECDHE-ECDSA-AES128-SHA256:AES128-SHA256", max_version="1.2", session_tickets=False),
    ClientHelloShape("legacy-cbc-tls12", "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:AES256-SHA:AES128-SHA:"
                     "ECDHE-ECDSA-AES128-SHA", max_version="1.2"),
    ClientHelloShape("bare-tls13", min_version="1.3", session_tickets=False, middlebox_compat=False),
    ClientHelloShape("openssl-default-tls12", "DEFAULT", max_version="1.2"),
    ClientHelloShape("two-suite-tls12", "ECDHE-ECDSA-AES256-GCM-SHA384:AES256-GCM-SHA384", max_version="1.2",
                     session_tickets=False),
    ClientHelloShape("openssl-default", "DEFAULT"),
)

# --- names and addresses --------------------------------------------------------------------------
_BRANDS = ("acme", "northwind", "contoso", "fabrikam", "globex", "initech", "hooli", "vandelay", "tyrell",
           "wonka", "soylent", "oscorp", "aperture", "blackmesa", "umbrella", "cyberdyne", "wayne", "stark",
           "duff", "gringotts", "monarch", "pied-piper", "massive", "zorg", "nakatomi", "rekall")
_TOPICS = ("news", "shop", "cloud", "photo", "maps", "social", "video", "travel", "weather", "sport", "music",
           "games", "learn", "health", "market", "bank", "recipes", "forum", "wiki", "jobs")
_TLDS = ("com", "net", "org", "io", "de", "co.uk", "fr")
_CDN_DOMAINS = ("edgecdn.net", "fastcache-cdn.com", "cloudedge.io", "static-akam.net", "cdn-front.net")
_DGA_TLDS = ("xyz", "top", "info", "biz", "cc", "ru", "pw")


def _site_name(rng: np.random.Generator) -> str:
    brand = _BRANDS[rng.integers(len(_BRANDS))]
    topic = _TOPICS[rng.integers(len(_TOPICS))]
    return f"{brand}{topic}.{_TLDS[rng.integers(len(_TLDS))]}"


def _cdn_name(rng: np.random.Generator) -> str:
    return f"{rng.bytes(int(rng.integers(4, 8))).hex()}.{_CDN_DOMAINS[rng.integers(len(_CDN_DOMAINS))]}"


def _dga_name(rng: np.random.Generator) -> str:
    letters = string.ascii_lowercase
    n = int(rng.integers(8, 17))
    return "".join(letters[i] for i in rng.integers(0, 26, n)) + "." + _DGA_TLDS[rng.integers(len(_DGA_TLDS))]


def _public_ipv4(rng: np.random.Generator) -> str:
    while True:
        ip = ipaddress.IPv4Address(int(rng.integers(0x01000000, 0xDF000000)))
        if ip.is_global and not ip.is_multicast:
            return str(ip)


def _public_ipv6(rng: np.random.Generator) -> str:
    # Documentation prefix 2001:db8::/32: never anyone's real address.
    interface = (int(rng.integers(1, 1 << 62)) << 32) | int(rng.integers(1, 1 << 32))
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | interface))


@dataclass(frozen=True)
class Server:
    """A server a host connects to: a name (or None for a bare IP), addresses, port, TLS shape."""

    name: str | None
    ipv4: str
    ipv6: str | None
    port: int
    shape: ServerShape
    distance_s: float  # extra RTT beyond the host's access link

    @property
    def cert_name(self) -> str:
        """The name its certificate is issued for: CDN edges share their CDN's wildcard certificate."""
        if self.name is None:
            return self.ipv4
        parent = self.name.partition(".")[2]
        return f"*.{parent}" if parent in _CDN_DOMAINS else self.name


@dataclass(frozen=True)
class Host:
    """A simulated host: one capture file."""

    name: str
    infected: bool
    mac: bytes
    gateway_mac: bytes
    ipv4: str
    ipv6: str | None
    resolver_v4: str
    resolver_v6: str | None
    mss: int
    ttl: int
    window: int
    window_scale: int
    rate_bps: float
    access_rtt_s: float
    browser: ClientHelloShape
    app_library: ClientHelloShape


@dataclass(frozen=True)
class Message:
    direction: int  # 0 client->server, 1 server->client
    size: int  # application plaintext bytes
    delay_s: float  # after the sender is ready (its previous data, or the peer's it answers)


@dataclass
class ConnectionPlan:
    """One TCP connection: a TLS session with its messages, or a scan probe (``probe`` set)."""

    family: str
    label: str
    start_s: float
    server: Server
    client_hello: ClientHelloShape | None
    sni: str | None
    messages: list[Message] = field(default_factory=list)
    close_by: int = C2S
    close_how: str = "fin"
    close_delay_s: float = 0.05
    close_notify: bool = True
    probe: str | None = None  # "open", "closed" or "filtered"
    lookup: str | None = None  # the name resolved over DNS before connecting
    nxdomain_lookups: tuple[str, ...] = ()  # failed lookups tried first (DGA)
    use_ipv6: bool = False
    client_port: int | None = None  # fixed source port (scanners); None: the host's next ephemeral port

    @property
    def server_ip(self) -> str:
        return self.server.ipv6 if self.use_ipv6 and self.server.ipv6 else self.server.ipv4


@dataclass
class PlanContext:
    """What a family planner needs: randomness, the host, the preset, the size cap, a time window."""

    rng: np.random.Generator
    host: Host
    difficulty: Difficulty
    max_flow_bytes: int
    horizon_s: float
    servers: dict[str, Server]  # stable per run: a site keeps its address and certificate

    def chance(self, p: float) -> bool:
        return bool(p > 0 and self.rng.random() < p)

    def uniform(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def integer(self, low: int, high: int) -> int:
        """An int in [low, high]."""
        return int(self.rng.integers(low, high + 1))

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def lognormal_bytes(self, median: float, sigma: float, low: int = 1, high: int | None = None) -> int:
        value = int(median * float(np.exp(sigma * self.rng.standard_normal())))
        return max(low, min(value, high if high is not None else self.max_flow_bytes))

    def server(self, key: str, make: Callable[[], Server]) -> Server:
        if key not in self.servers:
            self.servers[key] = make()
        return self.servers[key]

    def new_server(self, name: str | None, port: int, shape: ServerShape, *, v6_share: float,
                   distance: tuple[float, float] = (0.005, 0.120)) -> Server:
        ipv6 = _public_ipv6(self.rng) if self.chance(v6_share) else None
        return Server(name, _public_ipv4(self.rng), ipv6, port, shape, self.uniform(*distance))

    def normal_server_shape(self, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ServerShape:
        return ServerShape("ca", "1.2" if self.chance(0.15) else "1.3", self.pick((0, 1, 1, 2)), alpn)

    def malicious_server_shape(self) -> ServerShape:
        kind = "ca" if self.chance(self.difficulty.mimic_cert) else "self-signed"
        return ServerShape(kind, self.pick(("1.2", "1.3")), self.pick((0, 1, 2)), ())

    def malicious_hello(self) -> ClientHelloShape:
        if self.chance(self.difficulty.mimic_browser):
            return self.pick(BROWSER_HELLOS + LIBRARY_HELLOS)
        return self.pick(MINIMAL_HELLOS)

    def _within_budget(self, messages: list[Message]) -> list[Message]:
        """The leading messages whose plaintext fits the per-flow cap (always the first exchange):
        long-lived flows end earlier rather than grow past what the size budget allows."""
        kept: list[Message] = []
        total = 0
        for message in messages:
            if len(kept) >= 2 and total + message.size > self.max_flow_bytes:
                break
            kept.append(message)
            total += message.size
        return kept

    def ipv6_for(self, server: Server) -> bool:
        return bool(self.host.ipv6 and server.ipv6 and self.chance(0.8))

    def start(self) -> float:
        return self.uniform(0.0, self.horizon_s)

    def connection(self, family: str, start_s: float, server: Server, hello: ClientHelloShape, sni: str | None,
                   messages: list[Message], **kwargs) -> ConnectionPlan:
        plan = ConnectionPlan(family, FAMILIES[family].label, start_s, server, hello, sni,
                              self._within_budget(messages), **kwargs)
        if plan.lookup is None and server.name is not None:
            plan.lookup = server.name
        plan.use_ipv6 = self.ipv6_for(server) if server.name is not None else False
        return plan


def _request_response(ctx: PlanContext, requests: int, req: tuple[int, int], resp_median: float,
                      resp_sigma: float, think: tuple[float, float], gap: tuple[float, float],
                      budget: int | None = None) -> list[Message]:
    """Client request / server response pairs; responses share the flow's byte budget."""
    budget = ctx.max_flow_bytes if budget is None else budget
    messages: list[Message] = []
    for i in range(requests):
        if budget <= 0:
            break
        messages.append(Message(C2S, ctx.integer(*req), 0.0005 if i == 0 else ctx.uniform(*gap)))
        size = min(ctx.lognormal_bytes(resp_median, resp_sigma, low=60), budget)
        budget -= size
        messages.append(Message(S2C, max(size, 60), ctx.uniform(*think)))
    return messages


# --- normal families -----------------------------------------------------------------------------
def _plan_web_browsing(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """A page visit: 1-2 connections to the site, 0-3 to CDN names, maybe one third party; each
    carries 1-6 requests (250-900 B) with log-normal responses (median 3 kB, sigma 1.4: heavy
    tail, capped); idle 1-25 s before the browser closes (FIN, or RST 20%)."""
    t0 = ctx.start()
    site = ctx.server(f"site:{ctx.integer(0, 150)}", lambda: ctx.new_server(
        "www." + _site_name(ctx.rng), 443, ctx.normal_server_shape(), v6_share=0.6))
    targets = [site] * ctx.integer(1, 2)
    for _ in range(ctx.integer(0, 3)):
        targets.append(ctx.server(f"cdn:{ctx.integer(0, 40)}", lambda: ctx.new_server(
            _cdn_name(ctx.rng), 443, ctx.normal_server_shape(), v6_share=0.7, distance=(0.002, 0.03))))
    if ctx.chance(0.4):
        targets.append(ctx.server(f"3p:{ctx.integer(0, 20)}", lambda: ctx.new_server(
            ctx.pick(("analytics.", "ads.", "fonts.", "tags.")) + _site_name(ctx.rng), 443,
            ctx.normal_server_shape(), v6_share=0.5)))
    plans = []
    for server in targets[:budget]:
        messages = _request_response(ctx, ctx.integer(1, 6), (250, 900), 3000, 1.4, (0.005, 0.12), (0.001, 0.3))
        plans.append(ctx.connection(
            "web-browsing", t0 + ctx.uniform(0, 0.4), server, ctx.host.browser, server.name, messages,
            close_how="rst" if ctx.chance(0.2) else "fin", close_delay_s=ctx.uniform(1, 25),
            close_notify=ctx.chance(0.7)))
    return plans


def _odd_normal_hello_and_server(ctx: PlanContext, name: str, port: int) -> tuple[ClientHelloShape, Server]:
    """An IoT device or telemetry agent: minimal ClientHello, self-signed certificate."""
    hello = ctx.pick(MINIMAL_HELLOS)
    server = ctx.server(f"iot:{name}", lambda: ctx.new_server(
        name, port, ServerShape("self-signed", ctx.pick(("1.2", "1.3")), ctx.pick((0, 1)), ()), v6_share=0.1))
    return hello, server


def _plan_api_polling(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """An app polling an API: 3-12 polls at exponential intervals (mean 5-40 s), request 150-600 B,
    response median 400 B; one connection per poll (60%) or one keep-alive connection. With
    probability ``odd_normal`` it is an IoT/telemetry agent instead: minimal ClientHello,
    self-signed certificate, near-periodic polls with fixed sizes (a benign beacon)."""
    polls = min(ctx.integer(3, 12), budget)
    t = ctx.start()
    if ctx.chance(ctx.difficulty.odd_normal):
        name = ctx.pick(("telemetry.", "iot.", "status.", "devices.")) + _site_name(ctx.rng)
        hello, server = _odd_normal_hello_and_server(ctx, name, ctx.pick((443, 8883, 8443)))
        period, req, resp = ctx.uniform(20, 120), ctx.integer(120, 500), ctx.integer(40, 300)
        plans = []
        for _ in range(polls):
            messages = [Message(C2S, req + ctx.integer(-4, 4), 0.0005), Message(S2C, resp, ctx.uniform(0.01, 0.08))]
            plans.append(ctx.connection("api-polling", t, server, hello, server.name, messages,
                                        close_delay_s=ctx.uniform(0.01, 0.5), close_notify=ctx.chance(0.5)))
            t += period * ctx.uniform(0.95, 1.05)
        return plans
    server = ctx.server(f"api:{ctx.integer(0, 30)}", lambda: ctx.new_server(
        "api." + _site_name(ctx.rng), 443, ctx.normal_server_shape(("h2", "http/1.1")), v6_share=0.5))
    hello = ctx.host.app_library
    mean = ctx.uniform(5, 40)
    if ctx.chance(0.6):
        plans = []
        for _ in range(polls):
            messages = _request_response(ctx, 1, (150, 600), 400, 1.0, (0.01, 0.2), (0, 0))
            plans.append(ctx.connection("api-polling", t, server, hello, server.name, messages,
                                        close_delay_s=ctx.uniform(0.05, 2), close_notify=ctx.chance(0.6)))
            t += float(ctx.rng.exponential(mean)) + 0.5
        return plans
    messages = _request_response(ctx, polls, (150, 600), 400, 1.0, (0.01, 0.2), (mean * 0.3, min(mean * 1.7, 55)))
    return [ctx.connection("api-polling", t, server, hello, server.name, messages, close_delay_s=ctx.uniform(1, 20))]


def _plan_bulk_download(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """One download: request 300-700 B, response 50-100% of the per-flow cap, from a download
    mirror or CDN, by a browser or a command-line client (HTTP/1.1)."""
    server = ctx.server(f"dl:{ctx.integer(0, 20)}", lambda: ctx.new_server(
        ctx.pick(("download.", "mirror.", "files.")) + _site_name(ctx.rng), 443,
        ctx.normal_server_shape(("http/1.1",)), v6_share=0.5))
    hello = ctx.host.browser if ctx.chance(0.5) else ctx.host.app_library
    size = ctx.integer(ctx.max_flow_bytes // 2, ctx.max_flow_bytes)
    messages = [Message(C2S, ctx.integer(300, 700), 0.0005), Message(S2C, size, ctx.uniform(0.01, 0.1))]
    return [ctx.connection("bulk-download", ctx.start(), server, hello, server.name, messages,
                           close_delay_s=ctx.uniform(0.01, 2))]


def _plan_video_streaming(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """A player fetching 3-10 media segments every 2-6 s on one connection; segment size is the
    per-flow cap split evenly (+-20%)."""
    server = ctx.server(f"video:{ctx.integer(0, 15)}", lambda: ctx.new_server(
        _cdn_name(ctx.rng) if ctx.chance(0.5) else "media." + _site_name(ctx.rng), 443,
        ctx.normal_server_shape(), v6_share=0.7, distance=(0.002, 0.04)))
    segments = ctx.integer(3, 10)
    period = ctx.uniform(2, 6)
    chunk = max(2000, ctx.max_flow_bytes // segments)
    messages: list[Message] = []
    for i in range(segments):
        messages.append(Message(C2S, ctx.integer(400, 800), 0.0005 if i == 0 else period * ctx.uniform(0.8, 1.2)))
        messages.append(Message(S2C, int(chunk * ctx.uniform(0.8, 1.0)), ctx.uniform(0.005, 0.05)))
    return [ctx.connection("video-streaming", ctx.start(), server, ctx.host.browser, server.name, messages,
                           close_delay_s=ctx.uniform(1, 15))]


def _plan_update_check(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """An updater checking 1-4 times an hour-like period (compressed to 60-400 s here): request
    300-600 B, answer 200-1500 B ("no update"), 10% a larger download. Library ClientHello;
    with probability ``odd_normal`` a minimal ClientHello and self-signed update server."""
    checks = min(ctx.integer(1, 4), budget)
    if ctx.chance(ctx.difficulty.odd_normal):
        hello, server = _odd_normal_hello_and_server(ctx, "update." + _site_name(ctx.rng), 443)
    else:
        hello = ctx.host.app_library
        server = ctx.server(f"update:{ctx.integer(0, 12)}", lambda: ctx.new_server(
            ctx.pick(("update.", "updates.", "swupdate.")) + _site_name(ctx.rng), 443,
            ctx.normal_server_shape(("http/1.1",)), v6_share=0.4))
    t, period = ctx.start(), ctx.uniform(60, 400)
    plans = []
    for _ in range(checks):
        big = ctx.chance(0.1)
        resp = ctx.integer(ctx.max_flow_bytes // 4, ctx.max_flow_bytes) if big else ctx.integer(200, 1500)
        messages = [Message(C2S, ctx.integer(300, 600), 0.0005), Message(S2C, resp, ctx.uniform(0.02, 0.2))]
        plans.append(ctx.connection("update-check", t, server, hello, server.name, messages,
                                    close_delay_s=ctx.uniform(0.05, 1)))
        t += period * ctx.uniform(0.9, 1.1)
    return plans


def _plan_mail_tls(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """A mail client over implicit TLS: IMAPS (993, 70%) or SMTPS (465). The server greets first
    (60-200 B), then 3-8 command/response pairs (20-120 B / median 300 B); LOGOUT and FIN."""
    imap = ctx.chance(0.7)
    server = ctx.server(f"mail:{imap}:{ctx.integer(0, 10)}", lambda: ctx.new_server(
        ("imap." if imap else "smtp.") + _site_name(ctx.rng), 993 if imap else 465,
        ctx.normal_server_shape(()), v6_share=0.5))
    messages = [Message(S2C, ctx.integer(60, 200), ctx.uniform(0.003, 0.03))]
    for _ in range(ctx.integer(3, 8)):
        messages.append(Message(C2S, ctx.integer(20, 120), ctx.uniform(0.001, 3)))
        messages.append(Message(S2C, ctx.lognormal_bytes(300, 1.2, low=30), ctx.uniform(0.005, 0.1)))
    return [ctx.connection("mail-tls", ctx.start(), server, MAIL_HELLO, server.name, messages,
                           close_delay_s=ctx.uniform(0.01, 0.3))]


# --- malicious families --------------------------------------------------------------------------
def _c2_server(ctx: PlanContext, port: int) -> tuple[Server, str | None, tuple[str, ...]]:
    """A C2 endpoint: (server, SNI, failed DGA lookups). DGA names, an IP literal or no SNI;
    a CDN-like or plausible name when mimicking."""
    shape = ctx.malicious_server_shape()
    if ctx.chance(ctx.difficulty.mimic_sni):
        name = _cdn_name(ctx.rng) if ctx.chance(0.6) else ctx.pick(("cdn.", "api.", "static.")) + _site_name(ctx.rng)
        server = ctx.new_server(name, port, shape, v6_share=0.3)
        return server, name, ()
    mode = ctx.pick(("dga", "dga", "ip", "none"))
    if mode == "dga":
        name = _dga_name(ctx.rng)
        server = ctx.new_server(name, port, shape, v6_share=0.1)
        return server, name, tuple(_dga_name(ctx.rng) for _ in range(ctx.integer(0, 3)))
    server = ctx.new_server(None, port, shape, v6_share=0.0)
    return server, (server.ipv4 if mode == "ip" else None), ()


def _plan_c2_beacon(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """An implant checking in 6-40 times, every 30-240 s with 0-30% jitter (up to 90% when sizes
    are randomised), one TLS connection per check-in: a near-constant request (200-800 B +-8;
    +-50% when randomised), "no task" replies of 40-120 B, 10% a tasking of 0.5-5 kB."""
    server, sni, failed = _c2_server(ctx, ctx.pick((443, 443, 443, 8443, 4443)))
    hello = ctx.malicious_hello()
    randomise = ctx.chance(ctx.difficulty.randomise_sizes)
    period, jitter = ctx.uniform(30, 240), ctx.uniform(0.0, 0.9 if randomise else 0.3)
    req, idle_reply = ctx.integer(200, 800), ctx.integer(40, 120)
    t = ctx.start()
    plans = []
    for i in range(min(ctx.integer(6, 40), budget)):
        size = int(req * ctx.uniform(0.5, 1.5)) if randomise else req + ctx.integer(-8, 8)
        reply = ctx.integer(500, 5000) if ctx.chance(0.1) else (
            int(idle_reply * ctx.uniform(0.5, 2.0)) if randomise else idle_reply)
        messages = [Message(C2S, size, 0.0005), Message(S2C, reply, ctx.uniform(0.005, 0.08))]
        plans.append(ctx.connection("c2-beacon", t, server, hello, sni, messages,
                                    close_how="rst" if ctx.chance(0.3) else "fin", close_delay_s=ctx.uniform(0.001, 0.05),
                                    close_notify=ctx.chance(0.5), nxdomain_lookups=failed if i == 0 else ()))
        t += period * (1 + ctx.uniform(-jitter, jitter))
    return plans


def _plan_exfiltration(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """1-3 upload connections, each 2-6 client bursts sharing 50-100% of the per-flow cap, the
    server answering 30-200 B per burst; to a C2-style endpoint or a cloud-storage-like name."""
    server, sni, failed = _c2_server(ctx, ctx.pick((443, 443, 8443)))
    hello = ctx.malicious_hello()
    t = ctx.start()
    plans = []
    for i in range(min(ctx.integer(1, 3), budget)):
        bursts = ctx.integer(2, 6)
        total = ctx.integer(ctx.max_flow_bytes // 2, ctx.max_flow_bytes)
        messages: list[Message] = []
        for k in range(bursts):
            messages.append(Message(C2S, total // bursts, 0.0005 if k == 0 else ctx.uniform(0.05, 2)))
            messages.append(Message(S2C, ctx.integer(30, 200), ctx.uniform(0.005, 0.05)))
        plans.append(ctx.connection("exfiltration", t, server, hello, sni, messages,
                                    close_delay_s=ctx.uniform(0.01, 0.5), nxdomain_lookups=failed if i == 0 else ()))
        t += ctx.uniform(5, 120)
    return plans


def _plan_reverse_shell(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """One long connection back to the operator (443/4444/8443/9001): 5-20 commands of 10-100 B
    from the server, each answered by 20 B - 3 kB of output, 1-20 s apart; ends by RST (40%)."""
    server, sni, failed = _c2_server(ctx, ctx.pick((443, 4444, 8443, 9001)))
    messages: list[Message] = []
    budget_bytes = ctx.max_flow_bytes
    for _ in range(ctx.integer(5, 20)):
        out = min(ctx.lognormal_bytes(200, 1.3, low=20, high=3000), max(20, budget_bytes))
        budget_bytes -= out
        messages.append(Message(S2C, ctx.integer(10, 100), ctx.uniform(1, 20)))
        messages.append(Message(C2S, out, ctx.uniform(0.005, 0.5)))
    return [ctx.connection("reverse-shell", ctx.start(), server, ctx.malicious_hello(), sni, messages,
                           close_by=ctx.pick((C2S, S2C)), close_how="rst" if ctx.chance(0.4) else "fin",
                           close_delay_s=ctx.uniform(1, 30), close_notify=ctx.chance(0.3), nxdomain_lookups=failed)]


def _plan_brute_force(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """10-60 login attempts against one legitimate-looking server (HTTPS login or IMAPS, CA
    certificate), one short connection each, 0.2-3 s apart: request 300-500 B, refusal 200-600 B."""
    imap = ctx.chance(0.3)
    server = ctx.server(f"login:{imap}:{ctx.integer(0, 8)}", lambda: ctx.new_server(
        ("imap." if imap else "login.") + _site_name(ctx.rng), 993 if imap else 443,
        ctx.normal_server_shape(() if imap else ("http/1.1",)), v6_share=0.3))
    # Login tools are often ordinary HTTP libraries; on "easy" they keep an implant-like hello.
    if ctx.difficulty.mimic_browser > 0 and ctx.chance(0.5):
        hello = ctx.pick(LIBRARY_HELLOS)
    else:
        hello = ctx.malicious_hello()
    if imap:
        hello = ctx.pick(MINIMAL_HELLOS) if not ctx.chance(ctx.difficulty.mimic_browser) else MAIL_HELLO
    req, resp = ctx.integer(300, 500), ctx.integer(200, 600)
    t = ctx.start()
    plans = []
    for _ in range(min(ctx.integer(10, 60), budget)):
        if imap:
            messages = [Message(S2C, ctx.integer(60, 200), 0.005), Message(C2S, req // 8, 0.001),
                        Message(S2C, resp // 8, ctx.uniform(0.2, 1.5))]
        else:
            messages = [Message(C2S, req + ctx.integer(-10, 10), 0.0005), Message(S2C, resp, ctx.uniform(0.05, 0.4))]
        plans.append(ctx.connection("brute-force", t, server, hello, server.name, messages,
                                    close_by=ctx.pick((C2S, S2C)), close_delay_s=ctx.uniform(0.001, 0.05),
                                    close_notify=ctx.chance(0.5)))
        t += ctx.uniform(0.2, 3)
    return plans


def _plan_cryptominer(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """A stratum session on 3333/5555/14444/443: subscribe (120-200 B) and authorize, a job
    (300-450 B) every 10-50 s (4-12 of them), share submissions (150-220 B) answered by 50-80 B results."""
    shape = ctx.malicious_server_shape()
    if ctx.chance(0.5):
        name = ctx.pick(("pool.", "xmr.", "stratum.")) + _site_name(ctx.rng)
        server = ctx.new_server(name, ctx.pick((3333, 5555, 14444, 443)), shape, v6_share=0.1)
        sni: str | None = name
    else:
        server = ctx.new_server(None, ctx.pick((3333, 5555, 14444, 443)), shape, v6_share=0.0)
        sni = None
    randomise = ctx.chance(ctx.difficulty.randomise_sizes)
    job = ctx.integer(300, 450)
    messages = [Message(C2S, ctx.integer(120, 200), 0.0005), Message(S2C, ctx.integer(150, 300), 0.02),
                Message(C2S, ctx.integer(100, 160), 0.001), Message(S2C, ctx.integer(40, 80), 0.02),
                Message(S2C, job, 0.01)]
    period = ctx.uniform(10, 50)
    for _ in range(ctx.integer(4, 12)):
        if ctx.chance(0.5):
            messages.append(Message(C2S, ctx.integer(150, 220), ctx.uniform(1, period)))
            messages.append(Message(S2C, ctx.integer(50, 80), ctx.uniform(0.01, 0.05)))
        size = int(job * ctx.uniform(0.6, 1.4)) if randomise else job + ctx.integer(-6, 6)
        messages.append(Message(S2C, size, period * ctx.uniform(0.5, 1.0)))
    return [ctx.connection("cryptominer", ctx.start(), server, ctx.malicious_hello(), sni, messages,
                           close_delay_s=ctx.uniform(1, 20), close_notify=False)]


def _plan_port_scan(ctx: PlanContext, budget: int) -> list[ConnectionPlan]:
    """A SYN scan of 10-150 ports on one target from one source port (as scanners do), probes
    1-20 ms apart: closed (RST, 80%), filtered (no answer, SYN retried, 15%) or open (SYN-ACK,
    then RST from the scanner)."""
    target = ctx.new_server(None, 0, ServerShape(), v6_share=0.0, distance=(0.001, 0.08))
    common = [21, 22, 23, 25, 53, 80, 110, 135, 139, 143, 443, 445, 993, 995, 1433, 3306, 3389, 5900, 8080, 8443]
    count = min(ctx.integer(10, 150), budget)
    extra = [int(p) for p in ctx.rng.choice(np.arange(1, 65536), size=count, replace=False)]
    ports = list(dict.fromkeys(common + extra))[:count]
    ctx.rng.shuffle(ports)
    source_port = ctx.integer(40000, 65000)
    t = ctx.start()
    plans = []
    for port in ports:
        outcome = ctx.pick(("closed",) * 16 + ("filtered",) * 3 + ("open",))
        server = Server(None, target.ipv4, None, int(port), target.shape, target.distance_s)
        plans.append(ConnectionPlan("port-scan", MALICIOUS, t, server, None, None, probe=outcome,
                                    client_port=source_port))
        t += ctx.uniform(0.001, 0.02)
    return plans


PLANNERS: dict[str, Callable[[PlanContext, int], list[ConnectionPlan]]] = {
    "web-browsing": _plan_web_browsing,
    "api-polling": _plan_api_polling,
    "bulk-download": _plan_bulk_download,
    "video-streaming": _plan_video_streaming,
    "update-check": _plan_update_check,
    "mail-tls": _plan_mail_tls,
    "c2-beacon": _plan_c2_beacon,
    "exfiltration": _plan_exfiltration,
    "reverse-shell": _plan_reverse_shell,
    "brute-force": _plan_brute_force,
    "cryptominer": _plan_cryptominer,
    "port-scan": _plan_port_scan,
}
