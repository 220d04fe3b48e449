"""The headers of a crawled document wherever this app serves one (``GET /v1/jobs/{id}/html`` and the
dashboard's sandboxed frame): a sandbox (no script, no form, no plugin, an opaque origin that reaches no
cookie of ours), no request but ``data:`` images, no sniffing of its type, no Referer, not stored."""

from __future__ import annotations

CRAWLED_HTML_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
