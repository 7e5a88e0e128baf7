"""List-then-watch of one resource kind against a real API server, in asyncio (aiohttp).

The gateway model keeps its view of the cluster the way a gateway controller's informer does:
a LIST (the whole state, replacing what was known), then a WATCH from that list's
resourceVersion; an expired version (410 Gone) or a broken stream lists again. Runs in the model's
event loop, so stopping is a task cancellation rather than a thread waiting out a timeout.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Callable

import aiohttp

Handler = Callable[[str, object], None]   # ("SYNC", [items]) or (ADDED|MODIFIED|DELETED, obj)
WATCH_SECONDS = 240


class ApiAccess:
    """Base URL, TLS and credentials of one kubeconfig context (read with the kubernetes client)."""

    def __init__(self, kubeconfig: str | Path, context: str):
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg)
        self.host = cfg.host.rstrip("/")
        self.headers = {}
        token = (cfg.api_key or {}).get("authorization")
        if token:
            prefix = (cfg.api_key_prefix or {}).get("authorization")
            self.headers["Authorization"] = f"{prefix} {token}" if prefix else token
        self.ssl: ssl.SSLContext | bool = False
        if self.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else ssl._create_unverified_context()
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            self.ssl = ctx


async def list_and_watch(session: aiohttp.ClientSession, api: ApiAccess, path: str, handle: Handler,
                         synced: asyncio.Event, problems: dict[str, str]) -> None:
    """Feed `handle` forever: ("SYNC", items) after each LIST, then every watch event in order.
    A kind the server does not serve (yet: CRDs may come later) counts as an empty list; the last
    error that made it list again is in problems[path]."""
    while True:
        try:
            async with session.get(f"{api.host}{path}", headers=api.headers, ssl=api.ssl) as resp:
                if resp.status == 404:
                    handle("SYNC", [])
                    synced.set()
                    await asyncio.sleep(1)
                    continue
                resp.raise_for_status()
                body = await resp.json()
            handle("SYNC", body.get("items") or [])
            synced.set()
            version = body["metadata"]["resourceVersion"]
            url = (f"{api.host}{path}?watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}"
                   f"&resourceVersion={version}")
            while True:
                version = await _watch(session, api, url, handle)
                if version is None:
                    break                                   # expired: list again
                url = url.rsplit("&resourceVersion=", 1)[0] + f"&resourceVersion={version}"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
            problems[path] = f"{type(err).__name__}: {err}"[:300]
            await asyncio.sleep(1)                          # API server restarting: list again


async def _watch(session, api: ApiAccess, url: str, handle: Handler) -> str | None:
    """One watch request; the last resourceVersion seen, or None when it expired (410)."""
    version = url.rsplit("&resourceVersion=", 1)[1]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_SECONDS + 30)
    async with session.get(url, headers=api.headers, ssl=api.ssl, timeout=timeout) as resp:
        if resp.status == 410:
            return None
        resp.raise_for_status()
        pending = b""
        async for chunk in resp.content.iter_any():     # one JSON event per line, of any length
            *lines, pending = (pending + chunk).split(b"\n")
            for line in filter(bytes.strip, lines):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    return None if obj.get("code") == 410 else version
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") != "BOOKMARK":
                    handle(event["type"], obj)
    return version

