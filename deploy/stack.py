"""The scaled-out production shape on one machine: nginx in front of two gunicorn app servers
and two clustered Erlang nodes, one background-job worker, PostgreSQL and Redis.

`make stack` runs it in the foreground (Ctrl-C or SIGTERM stops every process it started);
the fault suite (e2e/test_scale_out_faults.py) and `make bench-stack` drive it from Python:

    with Stack(run_dir=..., env={...secrets, DATABASE_URL, REDIS_URL...}) as stack:
        stack.kill("app-a")             # SIGKILL, as a machine that died
        stack.start_service("erlang-a") # the same ports and data directory again

Every server listens on 127.0.0.1. PostgreSQL and Redis are not started here (the Makefile's
`postgres` and `redis` targets make sure they run): the stack only connects to them. DEBUG is
off and every secret is required, as in `make serve`; the Erlang nodes run from the OTP release.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
NGINX_SITE_TEMPLATE = ROOT / "deploy" / "nginx" / "stayafrica.conf.template"
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
RELEASE = ROOT / "erlang_messaging" / "_build" / "prod" / "rel" / "messaging_service"
NODE_NAMES = ("a", "b")
REQUIRED_SECRETS = ("SECRET_KEY", "MESSAGING_COOKIE", "MESSAGING_SHARED_SECRET", "METRICS_TOKEN", "BANK_DETAILS_KEY")
START_TIMEOUT_SECONDS = 60
# nginx rests a server this long after it failed a request (passive health checks: the only
# kind open-source nginx has). A planned restart drains the server instead (restart()).
NGINX_FAIL_TIMEOUT_SECONDS = 10


def free_port() -> int:
    """A port nothing listens on now, on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """One process of the stack: how to start it, how to tell it is ready, where it logs."""

    name: str
    command: list[str]
    env: dict
    log_path: Path
    ready_url: str
    # gunicorn forks its workers: SIGKILL reaches them through the process group. The Erlang
    # release execs the VM, so its PID is the node itself.
    kill_group: bool = False
    # Emptied (made anew) before each start: an app server's Prometheus directory, whose
    # counts from an earlier run must not be summed again.
    fresh_dir: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.fresh_dir is not None:
            shutil.rmtree(self.fresh_dir, ignore_errors=True)
            self.fresh_dir.mkdir(parents=True)
        with open(self.log_path, "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only the stack, which
            # then stops each service in order.
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def signal(self, sig: int) -> None:
        if not self.running:
            return
        if self.kill_group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL if it lingers."""
        if not self.running:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean stop, nothing flushed, as when the machine dies."""
        if not self.running:
            return
        self.signal(signal.SIGKILL)
        self.process.wait(10)
        if self.kill_group:
            # The group's other members (gunicorn's workers) die with it; wait for the sockets
            # they held to close, so "killed" means nothing answers on the port any more.
            port = urlsplit(self.ready_url).port
            wait_until(lambda: not _port_open(port), seconds=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _children(pid: int | None) -> set[int]:
    """The PIDs of a process's children (nginx's workers), from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if pid is not None and int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, seconds: float = 10.0, interval: float = 0.05) -> bool:
    """Call `condition` until it returns something true or `seconds` pass; return whether it did.

    The loop always ends: callers (the stack, the tests) act on the result instead of hanging
    on a service that never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


_UNVERIFIED_TLS = ssl.create_default_context()
_UNVERIFIED_TLS.check_hostname = False
_UNVERIFIED_TLS.verify_mode = ssl.CERT_NONE  # our own self-signed certificate, on loopback


def _answers(url: str) -> bool:
    """Whether `url` gives any HTTP answer below 500 (a redirect or a 404 is an answer)."""
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=1, context=_UNVERIFIED_TLS) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (OSError, urllib.error.URLError):
        return False


class Stack:
    """The whole shape on loopback ports, started in order and stopped in reverse."""

    def __init__(
        self,
        *,
        run_dir: Path,
        env: dict,
        app_workers: int = 2,
        job_workers: int = 1,
        public_port: int | None = None,
        internal_port: int | None = None,
        django_messaging_node: str | None = None,
        nginx_workers: int = 1,
        access_log: bool = True,
        node_env: dict | None = None,
    ):
        """`env`: the environment every process gets (secrets, DATABASE_URL, REDIS_URL, ...).
        `django_messaging_node`: "a" to send Django's messaging calls to node A only (through
        its pinned location), None to spread them over both nodes. `access_log=False` turns off
        nginx's and gunicorn's access logs (for a benchmark). `node_env`: settings for one
        Erlang node only, e.g. {"a": {"PERSIST_FLUSH_INTERVAL_MS": "60000"}}."""
        missing = [name for name in REQUIRED_SECRETS if not env.get(name)]
        if missing:
            raise SystemExit(
                f"stack: {', '.join(missing)} not set. Set each to a private random value, "
                "e.g. SECRET_KEY=$(openssl rand -hex 32)."
            )
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.public_port = public_port or free_port()
        self.internal_port = internal_port or free_port()
        self.url = f"https://127.0.0.1:{self.public_port}"
        self.internal_url = f"http://127.0.0.1:{self.internal_port}"
        self.app_ports = {name: free_port() for name in NODE_NAMES}
        self.node_ports = {name: free_port() for name in NODE_NAMES}
        self.nginx_workers = nginx_workers
        self.drained: set[str] = set()  # servers rolled out of nginx's upstreams (restart())
        self.access_log = access_log
        messaging_path = f"/messaging/node-{django_messaging_node}" if django_messaging_node else "/messaging"
        # Only the app servers count into a Prometheus directory, each its own (below).
        env = {key: value for key, value in env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {
            **env,
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            "TRUSTED_PROXIES": "127.0.0.1",
            "ERLANG_MESSAGING_URL": self.internal_url + messaging_path,
            "ERLANG_MESSAGING_PUBLIC_URL": self.url + "/messaging",
        }
        self.services: dict[str, Service] = {}
        for name in NODE_NAMES:
            self._add_erlang_node(name, (node_env or {}).get(name, {}))
        for name in NODE_NAMES:
            self._add_app_server(name, app_workers)
        for number in range(1, job_workers + 1):
            self._add_job_worker(number)
        self._add_nginx()

    # --- the services ---------------------------------------------------------------------

    def node_name(self, name: str) -> str:
        # Unique per stack, so two stacks (or a stack and `make run`) never share a node name.
        return f"stack_{name}_{self.public_port}@localhost"

    def _add_erlang_node(self, name: str, own_env: dict) -> None:
        others = [self.node_name(other) for other in NODE_NAMES if other != name]
        data_dir = self.run_dir / f"erlang-{name}"
        relx_dir = self.run_dir / f"relx-{name}"  # the release writes its vm.args here
        data_dir.mkdir(exist_ok=True)
        relx_dir.mkdir(exist_ok=True)
        port = self.node_ports[name]
        env = {
            **self.env,
            "HTTP_PORT": str(port),
            "MESSAGING_BIND": "127.0.0.1",
            "MESSAGING_NODE_NAME": self.node_name(name),
            "MESSAGING_CLUSTER_NODES": ",".join(others),
            "MESSAGING_DATA_DIR": str(data_dir),
            "RELX_OUT_FILE_PATH": str(relx_dir),
            "DJANGO_API_URL": self.internal_url,
            **own_env,
        }
        self.services[f"erlang-{name}"] = Service(
            name=f"erlang-{name}",
            command=[str(RELEASE / "bin" / "messaging_service"), "foreground"],
            env=env,
            log_path=self.run_dir / f"erlang-{name}.log",
            ready_url=f"http://127.0.0.1:{port}/health",
        )

    def _add_app_server(self, name: str, workers: int) -> None:
        port = self.app_ports[name]
        metrics_dir = self.run_dir / f"prometheus-{name}"  # its workers' counters, summed by its /metrics
        env = {
            **self.env,
            "WEB_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        if not self.access_log:
            env["WEB_ACCESS_LOG"] = ""  # gunicorn's too, not only nginx's
        self.services[f"app-{name}"] = Service(
            name=f"app-{name}",
            command=[str(Path(sys.executable).parent / "gunicorn"), "--config", str(GUNICORN_CONFIG)],
            env=env,
            log_path=self.run_dir / f"app-{name}.log",
            ready_url=f"http://127.0.0.1:{port}/health/live/",
            kill_group=True,
            fresh_dir=metrics_dir,
        )

    def _add_job_worker(self, number: int) -> None:
        self.services[f"worker-{number}"] = Service(
            name=f"worker-{number}",
            command=[sys.executable, "manage.py", "run_worker", "--worker-id", f"stack-{self.public_port}-{number}"],
            env=self.env,
            log_path=self.run_dir / f"worker-{number}.log",
            ready_url="",
        )

    def _add_nginx(self) -> None:
        config = self.write_nginx_config()
        self.services["nginx"] = Service(
            name="nginx",
            command=["nginx", "-p", str(self.run_dir), "-c", str(config), "-e", str(self.run_dir / "nginx-error.log")],
            env=self.env,
            log_path=self.run_dir / "nginx.log",
            ready_url=f"{self.url}/health/live/",
        )

    # --- nginx ------------------------------------------------------------------------------

    def render_nginx_site(self, certificate: Path, key: Path) -> str:
        def server_lines(kind: str, ports: dict) -> str:
            health = f"max_fails=1 fail_timeout={NGINX_FAIL_TIMEOUT_SECONDS}s"
            return "\n".join(
                f"    server 127.0.0.1:{port} {health}{' down' if f'{kind}-{name}' in self.drained else ''};  # {name}"
                for name, port in ports.items()
            )

        node_upstreams = "\n".join(
            f"upstream stayafrica_messaging_{name} {{\n    server 127.0.0.1:{port};\n}}"
            for name, port in self.node_ports.items()
        )
        pinned_ws = "\n".join(
            f"    location = /messaging/node-{name}/ws {{\n"
            f"        proxy_pass http://stayafrica_messaging_{name}/ws;\n"
            "        proxy_set_header Upgrade $http_upgrade;\n"
            "        proxy_set_header Connection $stayafrica_connection;\n"
            "        proxy_read_timeout 120s;\n"
            "    }"
            for name in self.node_ports
        )
        pinned_api = "\n".join(
            f"    location /messaging/node-{name}/ {{\n        proxy_pass http://stayafrica_messaging_{name}/;\n    }}"
            for name in self.node_ports
        )
        values = {
            "APP_SERVERS": server_lines("app", self.app_ports),
            "MESSAGING_NODES": server_lines("erlang", self.node_ports),
            "MESSAGING_NODE_UPSTREAMS": node_upstreams,
            "PINNED_WEBSOCKET_LOCATIONS": pinned_ws,
            "PINNED_API_LOCATIONS": pinned_api,
            "PUBLIC_LISTEN": f"127.0.0.1:{self.public_port}",
            "INTERNAL_LISTEN": f"127.0.0.1:{self.internal_port}",
            "TLS_CERTIFICATE": str(certificate),
            "TLS_CERTIFICATE_KEY": str(key),
            "PUBLIC_ACCESS_LOG": self._access_log("public"),
            "INTERNAL_ACCESS_LOG": self._access_log("internal"),
        }
        site = NGINX_SITE_TEMPLATE.read_text()
        for placeholder, value in values.items():
            site = site.replace("{{" + placeholder + "}}", value)
        if re.search(r"\{\{[A-Z_]+\}\}", site):
            raise ValueError(f"{NGINX_SITE_TEMPLATE} has a placeholder the stack does not fill")
        if not self.access_log:
            site = site.replace("off stayafrica;", "off;")
        return site

    def _access_log(self, listener: str) -> str:
        return str(self.run_dir / f"nginx-{listener}-access.log") if self.access_log else "off"

    def write_nginx_config(self) -> Path:
        """The site file from the template, and a main file that runs nginx unprivileged in
        the foreground with every path inside run_dir."""
        certificate, key = self._tls_certificate()
        self.tls_certificate = certificate  # clients on this machine can verify nginx with it
        (self.run_dir / "stayafrica.conf").write_text(self.render_nginx_site(certificate, key))
        temp = self.run_dir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        main = self.run_dir / "nginx.conf"
        # Started as root, nginx would hand its workers to an unprivileged user that cannot
        # enter run_dir: on loopback they run as whoever started the stack.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        main.write_text(
            f"{user}daemon off;\nworker_processes {self.nginx_workers};\npid {self.run_dir}/nginx.pid;\n"
            f"error_log {self.run_dir}/nginx-error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
            f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n"
            f"    scgi_temp_path {temp}/scgi;\n"
            f"    include {self.run_dir}/stayafrica.conf;\n"
            "}\n"
        )
        return main

    def _tls_certificate(self) -> tuple[Path, Path]:
        """STACK_TLS_CERTIFICATE/_KEY when given, else a self-signed one for 127.0.0.1."""
        given = self.env.get("STACK_TLS_CERTIFICATE"), self.env.get("STACK_TLS_CERTIFICATE_KEY")
        if all(given):
            return Path(given[0]), Path(given[1])
        certificate, key = self.run_dir / "tls-certificate.pem", self.run_dir / "tls-key.pem"
        if not certificate.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
                + ["-keyout", str(key), "-out", str(certificate), "-days", "7", "-subj", "/CN=127.0.0.1"]
                + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                check=True,
                capture_output=True,
            )
        return certificate, key

    # --- starting and stopping ----------------------------------------------------------------

    def prepare(self) -> None:
        """What `make serve` does before starting: migrations, then the static files."""
        self.env.setdefault("STATIC_ROOT", str(self.run_dir / "static"))
        for service in self.services.values():
            service.env["STATIC_ROOT"] = self.env["STATIC_ROOT"]
        for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
            manage = [sys.executable, "manage.py", *command, "-v", "0"]
            result = subprocess.run(manage, cwd=ROOT, env=self.env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"stack: manage.py {command[0]} failed:\n{result.stdout}{result.stderr}")

    def start(self) -> "Stack":
        """Everything, in dependency order; each server answers before the next starts."""
        if not (RELEASE / "bin" / "messaging_service").exists():
            raise SystemExit(f"stack: no messaging release in {RELEASE}: run 'make erlang-release'")
        if not shutil.which("nginx"):
            raise SystemExit("stack: nginx is not installed (apt-get install nginx-light)")
        self.prepare()
        try:
            for name in self.services:
                self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def start_service(self, name: str, **env) -> Service:
        """Start (or start again, on the same port and data) one service and wait until it
        answers; `env` changes its settings from now on."""
        service = self.services[name]
        service.env.update({key: str(value) for key, value in env.items()})
        service.start()
        if service.ready_url and not wait_until(
            lambda: _answers(service.ready_url) or not service.running, seconds=START_TIMEOUT_SECONDS
        ):
            log = service.log()[-3000:]
            raise RuntimeError(f"stack: {name} did not answer within {START_TIMEOUT_SECONDS} s:\n{log}")
        if not service.running:
            raise RuntimeError(f"stack: {name} exited at start:\n{service.log()[-3000:]}")
        return service

    def kill(self, name: str) -> None:
        self.services[name].kill()

    def restart(self, name: str, **env) -> Service:
        """One step of a rolling restart, with nothing failed: a server behind nginx is first
        drained (marked `down` and nginx reloaded, so no request is sent to it and none is
        cut off on a kept-alive connection), then stopped cleanly (SIGTERM: gunicorn finishes
        its requests, the Erlang node syncs its log), started with `env` changed, and put back
        once it answers. A job worker is simply stopped and started."""
        behind_nginx = self._upstream_name(name) is not None
        if behind_nginx:
            self.drain(name)
        self.services[name].stop()
        service = self.start_service(name, **env)
        if behind_nginx:
            self.undrain(name)
        return service

    def drain(self, name: str) -> None:
        """Take an app server or an Erlang node out of nginx's shared upstream."""
        self.drained.add(self._upstream_name(name))
        self.reload_nginx()

    def undrain(self, name: str) -> None:
        self.drained.discard(self._upstream_name(name))
        self.reload_nginx()

    @staticmethod
    def _upstream_name(service: str) -> str | None:
        """The service's key in the drained set ('app-a', 'erlang-b'); None for the others."""
        kind, _, node = service.partition("-")
        return f"{kind}-{node}" if kind in ("app", "erlang") and node in NODE_NAMES else None

    def reload_nginx(self) -> None:
        """Rewrite the site and reload nginx (SIGHUP), returning once every worker of the old
        configuration has finished its requests and exited."""
        nginx = self.services["nginx"]
        (self.run_dir / "stayafrica.conf").write_text(self.render_nginx_site(*self._tls_certificate()))
        old_workers = _children(nginx.pid)
        nginx.signal(signal.SIGHUP)
        if not wait_until(lambda: not (old_workers & _children(nginx.pid)), seconds=30):
            raise RuntimeError("stack: nginx's old workers did not finish within 30 s of a reload")

    def stop(self) -> None:
        """Every service this stack started, in reverse order: nginx first, the nodes last."""
        for service in reversed(list(self.services.values())):
            service.stop()

    def describe(self) -> str:
        lines = [f"{'service':<10} {'pid':>8}  address"]
        for service in self.services.values():
            if service.name == "nginx":
                address = f"{self.url} (public, TLS) · {self.internal_url} (internal)"
            elif service.ready_url:
                address = f"http://127.0.0.1:{urlsplit(service.ready_url).port}"
            else:
                address = "(takes jobs from PostgreSQL)"
            lines.append(f"{service.name:<10} {service.pid or '-':>8}  {address}")
        return "\n".join(lines)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_database(database_url: str) -> None:
    """Create DATABASE_URL's PostgreSQL database when it does not exist yet (`make stack` on a
    fresh machine); the migrations that follow fill it."""
    import psycopg2
    from psycopg2 import sql

    url = urlsplit(database_url)
    if not url.scheme.startswith("postgres"):
        return
    name = unquote(url.path.lstrip("/"))
    connection = psycopg2.connect(
        dbname="postgres",
        user=unquote(url.username or "postgres"),
        password=unquote(url.password or "") or None,
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
    )
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                print(f"==> Creating the database {name}", flush=True)
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", help="logs, nginx configuration, write-ahead logs (default: a new temporary one)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STACK_PORT", 8443)), help="nginx, TLS")
    parser.add_argument("--internal-port", type=int, default=int(os.environ.get("STACK_INTERNAL_PORT", 8081)))
    parser.add_argument("--app-workers", type=int, default=2, help="gunicorn workers per app server")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stayafrica")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    ensure_database(env["DATABASE_URL"])
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="stayafrica-stack-"))
    stack = Stack(
        run_dir=run_dir, env=env, app_workers=args.app_workers, public_port=args.port, internal_port=args.internal_port
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print(f"==> Starting the stack (logs in {run_dir})", flush=True)
    with stack:
        print(stack.describe())
        print(f"==> Portal: {stack.url}/admin/  (self-signed certificate). Ctrl-C stops everything.")
        print("    Try a failover: kill -9 -<pid of app-a> (the server and its workers) or kill -9 <pid of erlang-a>;")
        print("    nginx sends everything to the other one.")
        try:
            while not stopping:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        print("==> Stopping the stack")


if __name__ == "__main__":
    main()
