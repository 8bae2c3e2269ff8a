"""Benchmarks: the tenant-scoped request path under gunicorn on PostgreSQL.

Measures what every later endpoint pays for tenancy: API-key authentication, the
transaction-local RLS setting and the scoped query, against the machine's limits in
shared/MEASURED.md (one-row DRF view: ~1,136 req/s with persistent connections).

    make bench                # prints a Markdown table to paste into bench/RESULTS.md
    BENCH_SECONDS=20 make bench

Load comes from wrk when installed (apt-get install wrk), else from a small threaded
Python client; both keep connections alive.
"""

from __future__ import annotations

import http.client
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The 1M-contact tenant lives in DB_NAME (bench/build_tenant.py); scripts that prepare() a fresh
# database of their own point these globals elsewhere first with use_database().
DB_NAME = "segmentor_bench"
ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
DATABASE_URL = f"postgres://segmentor@127.0.0.1:5432/{DB_NAME}"
PORT = int(os.environ.get("BENCH_PORT", "8765"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
PYTHON = sys.executable


def use_database(name: str) -> None:
    """Point env(), prepare() and the server at database ``name`` (prepare() drops and recreates it)."""
    global DB_NAME, DATABASE_URL
    DB_NAME = name
    DATABASE_URL = f"postgres://segmentor@127.0.0.1:5432/{name}"


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/12",
        "CACHE_URL": "rediscache://127.0.0.1:6379/11",
        "SECRET_KEY": "bench-secret-key",
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "API_KEY_THROTTLE_RATE": "100000000/min",
        "LOG_LEVEL": "WARNING",
        "STATIC_MANIFEST": "0",
    }


def prepare() -> str:
    """Create a fresh benchmark database with one tenant; return an API key."""
    subprocess.run(["psql", ADMIN_URL, "-qc", f"DROP DATABASE IF EXISTS {DB_NAME}"], check=True)
    subprocess.run(["psql", ADMIN_URL, "-qc", f"CREATE DATABASE {DB_NAME} OWNER segmentor"], check=True)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)
    script = (
        "from tenants.models import User, ApiKey, Membership\n"
        "from tenants.services import tenant_create, api_key_create\n"
        "from tenants.context import tenant_context\n"
        "user = User.objects.create_user('bench@example.com', 'bench-password-1')\n"
        "tenant = tenant_create(name='Bench Tenant', owner=user)\n"
        "with tenant_context(tenant.id):\n"
        "    owner = Membership.objects.get(user=user)\n"
        "    _, secret = api_key_create(tenant=tenant, name='bench', scope=ApiKey.Scope.READ, acting=owner)\n"
        "print(secret)\n"
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script], cwd=ROOT, env=env(), check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def start_server() -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "segmentor.wsgi",
            "-b",
            f"127.0.0.1:{PORT}",
            "-w",
            str(WORKERS),
            "--access-logfile",
            "/dev/null",
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status in (200, 503):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def load_wrk(path: str, headers: dict[str, str]) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency"]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run([*args, f"http://127.0.0.1:{PORT}{path}"], check=True, capture_output=True, text=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(non_2xx.group(1)) if non_2xx else 0.0,
    }
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return result


def load_python(path: str, headers: dict[str, str]) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + SECONDS
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status >= 400:
                errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CONNECTIONS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": quantiles[49], "p99": quantiles[98], "errors": float(errors[0])}


def main() -> None:
    use_database(os.environ.get("BENCH_DB", "segmentor_bench_http"))
    secret = prepare()
    server = start_server()
    load = load_wrk if shutil.which("wrk") else load_python
    scenarios = [
        ("healthz (DB + broker check, no tenant)", "/healthz", {}),
        ("API `GET /api/v1/tenant/` (key auth + RLS transaction)", "/api/v1/tenant/", {}),
        ("API `GET /api/v1/members/` (key auth + RLS + scoped list)", "/api/v1/members/", {}),
    ]
    try:
        rows = []
        for name, path, extra in scenarios:
            headers = {"Authorization": f"Bearer {secret}"} if path.startswith("/api/") else {}
            result = load(path, {**headers, **extra})
            rows.append((name, result))
    finally:
        server.terminate()
        server.wait(10)
    tool = "wrk" if load is load_wrk else "python threads"
    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · {tool}")
    print(f"gunicorn {WORKERS} sync workers, {CONNECTIONS} connections, {SECONDS} s per scenario, PostgreSQL\n")
    print("| scenario | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']:.0f} |")


if __name__ == "__main__":
    main()
