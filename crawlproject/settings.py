"""Scrapy settings of the crawl worker, derived from the one crawljobs settings object (never retyped).

The object is read here once and handed to the worker's components as ``CRAWLJOBS_SETTINGS``: they take their
typed configuration from the crawler's settings (``crawlproject.config.WorkerConfig.of(crawler)``).
"""

from __future__ import annotations

import shutil

from crawljobs.config import Settings
from crawljobs.logs import configure_logging
from crawlproject.capacity import browser_pages
from crawlproject.profiles import NAVIGATION_ACCEPT, Profile, Region, browser_version

_settings = Settings()
CRAWLJOBS_SETTINGS = _settings

BOT_NAME = "crawlproject"
SPIDER_MODULES = ["crawlproject.spiders"]
NEWSPIDER_MODULE = "crawlproject.spiders"

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
# scrapy-playwright's handler: its http engine (Scrapy's HTTP/1.1 handler) bounds response heads, its browser
# engine puts a deadline, the body limit and a memory cap on every render (crawlproject.rendering).
DOWNLOAD_HANDLERS = {
    "http": "crawlproject.http.DownloadHandler",
    "https": "crawlproject.http.DownloadHandler",
}

DOWNLOADER_MIDDLEWARES = {
    # Scrapy's robots.txt middleware (at its own place), raising a typed refusal.
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "crawlproject.robots.RobotsMiddleware": 100,
    "crawlproject.middlewares.FetchMethodMiddleware": 100,
    # A tenant's session of the domain (cookies, profile) on the method's tier; contexts per tenant.
    "crawlproject.sessions.SessionMiddleware": 105,
    "crawlproject.middlewares.NetworkGuardMiddleware": 110,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "crawlproject.middlewares.JobRetryMiddleware": 550,
    # Scrapy's, at their own places, failing the attempt at their limits instead of dropping the request.
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    "crawlproject.middlewares.JobMetaRefreshMiddleware": 580,
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": None,
    "crawlproject.middlewares.DecompressionMiddleware": 590,
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "crawlproject.middlewares.JobRedirectMiddleware": 600,
}
ITEM_PIPELINES = {"crawlproject.pipelines.ResultPipeline": 300}
# The browser guard installs PLAYWRIGHT_ABORT_REQUEST: this crawler's network rules, checked on every request
# Chromium makes.
ADDONS = {"crawlproject.browser.BrowserGuard": 0}
EXTENSIONS = {
    "crawlproject.extensions.WorkerLifecycle": 0,
    "crawlproject.telemetry.WorkerTelemetry": 10,
    "scrapy.extensions.telnet.TelnetConsole": None,
}
REMOTE_CONTROL_ENABLED = False
# Each page yields exactly one item: Scrapy's default of 100 parallel item tasks per response was the
# worker's largest single cost (bench/crawl.py, py-spy).
CONCURRENT_ITEMS = 1
# The resolver that checks every address a direct request connects to (Scrapy 2.19 names it TWISTED_DNS_RESOLVER;
# the old DNS_RESOLVER name warns at every start).
TWISTED_DNS_RESOLVER = "crawlproject.resolver.GuardedResolver"

# Politeness and throughput: one process per core, concurrency inside it.
CONCURRENT_REQUESTS = _settings.worker_concurrency
CONCURRENT_REQUESTS_PER_DOMAIN = _settings.per_domain_concurrency
CRAWLJOBS_MAX_IN_FLIGHT = _settings.worker_concurrency * 2
DOWNLOAD_DELAY = _settings.download_delay
AUTOTHROTTLE_ENABLED = _settings.autothrottle
DOWNLOAD_TIMEOUT = _settings.download_timeout
DOWNLOAD_MAXSIZE = _settings.max_body_bytes
DOWNLOAD_WARNSIZE = 0
ROBOTSTXT_OBEY = True  # for jobs that ask for it (obey_robots); the others carry dont_obey_robotstxt
COOKIES_ENABLED = False
REDIRECT_MAX_TIMES = 10
HTTPERROR_ALLOW_ALL = True


# The browser: Debian's Chromium (or CRAWLJOBS_BROWSER_EXECUTABLE), bounded, pages always closed; each render
# bounded by crawlproject.rendering (CRAWLJOBS_RENDER_TIMEOUT, CRAWLJOBS_MAX_BODY_BYTES,
# CRAWLJOBS_BROWSER_MEMORY_MB).
PLAYWRIGHT_BROWSER_TYPE = "chromium"
_executable = _settings.browser_executable or shutil.which("chromium") or shutil.which("chromium-browser")

# The http engine says the browser it runs beside: the User-Agent and Accept-Language of the browser's own
# profile (its real version, crawlproject.profiles), never a version of its own (it said Chrome/131 while the
# browser was 156). Its TLS handshake is still Python's: the impersonate engine is the one that passes as Chrome.
try:
    _region = Region.parse(_settings.browser_region)
except ValueError:  # WorkerConfig refuses it at start, with the setting's name
    _region = Region()
_profile = Profile(version=browser_version(_executable), region=_region)
USER_AGENT = _profile.user_agent
DEFAULT_REQUEST_HEADERS = {"Accept": NAVIGATION_ACCEPT, "Accept-Language": _profile.accept_language}
# SwiftShader, headless Chromium's WebGL, is a tell of its own; ANGLE on EGL reports the machine's GPU, or Mesa's
# llvmpipe on a machine without one (what a Linux desktop without GPU drivers reports).
_GL_FLAGS = {
    # (Compositing stays in software, as headless Chromium's is by default: on llvmpipe it cost a quarter of the
    # rendered pages/s, bench.crawl's browser row; WebGL still gets ANGLE on EGL.)
    "egl": ["--use-gl=angle", "--use-angle=gl-egl", "--ignore-gpu-blocklist", "--disable-gpu-compositing"],
    "swiftshader": [],
    "none": ["--disable-gpu", "--disable-software-rasterizer"],
}
PLAYWRIGHT_LAUNCH_OPTIONS = {
    "headless": True,
    "args": [
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        # WebGL (CRAWLJOBS_BROWSER_GL): the flags that make the renderer a real one where they can. The profile's
        # flags (User-Agent, webdriver, languages, window) are added at launch (crawlproject.profiles).
        *_GL_FLAGS[_settings.browser_gl],
        # WebRTC does not go through proxies: no UDP but through one (which a proxy never carries). The switch
        # is `--webrtc-ip-handling-policy`: the `--force-` spelling this once used is ignored (4 STUN/TURN
        # datagrams reached a forbidden address through it). Pages do not even get the API (browser.NO_WEBRTC).
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    ],
    **({"executable_path": _executable} if _executable else {}),
}
PLAYWRIGHT_MAX_CONTEXTS = 8
# Every context may use all the worker's pages; the pages of all contexts together are one budget
# (crawlproject.capacity), and contexts with no page are closed when idle (crawlproject.rendering).
PLAYWRIGHT_MAX_PAGES_PER_CONTEXT = browser_pages(_settings)
PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT = _settings.download_timeout * 1000
PLAYWRIGHT_PROCESS_REQUEST_HEADERS = None

LOG_LEVEL = "INFO"
if _settings.log_format == "json":
    # One JSON object a line (crawljobs.logs) from the first record on: ours is installed before Scrapy logs
    # anything, in place of Scrapy's own (text) handler.
    LOG_INSTALL_ROOT_HANDLER = False
    configure_logging(_settings)
STATS_DUMP = True
