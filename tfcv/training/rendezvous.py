"""The tasks of a multi-worker run meet before TensorFlow joins them.

`MultiWorkerMirroredStrategy()` blocks in C++, holding the interpreter,
until every task of `TF_CONFIG` has joined: a missing task, or a port that
another program holds, would leave it waiting forever and deaf to SIGTERM.
So the tasks first meet in Python, where the clock and SIGTERM are watched:

- the leader (the `chief` task, else worker 0) listens on its own TF_CONFIG
  port; every other task connects to it and sends one line of JSON naming
  itself and the flags it was started with;
- when every task has said hello with the leader's flags, the leader
  answers `go` to all, closes its port and each task goes on to create the
  strategy; a task with other flags (or a task name already taken) gets an
  error line instead, and both sides stop with a one-line error.

A peer that answers on the port but speaks no JSON is not a tfcv worker:
the wait goes on and, at the timeout, the message says so. A task that dies
between `go` and TensorFlow's join still stalls the join.
"""

import json
import socket
import time

from absl import logging

# Seconds between polls of the leader's port and of our listener.
POLL_SECONDS = 0.2
# Longest line a task sends (its flags as JSON).
_MAX_LINE = 1 << 16
# Seconds a follower waits for the leader to acknowledge its hello; a
# program that accepts connections but says nothing is not a tfcv leader.
_ACK_SECONDS = 5.0


class ClusterJoinError(RuntimeError):
    """The other workers did not show up, or a SIGTERM came first.

    `exit_code` is the status the command ends with: 1 for a timeout, 143
    (128 + SIGTERM) for a preemption. Nothing has been written yet.
    """

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def task_names(config):
    """`["chief:0", "worker:0", ...]` of a parsed TF_CONFIG, leader first."""
    names = [
        f"{job}:{index}"
        for job, addresses in config["cluster"].items()
        for index in range(len(addresses))
    ]
    leader = "chief:0" if "chief:0" in names else "worker:0"
    return [leader] + sorted(name for name in names if name != leader)


def address_of(config, name):
    job, index = name.split(":")
    return config["cluster"][job][int(index)]


def rendezvous(config, run_flags, timeout, stop=None):
    """Returns once every task of `config` runs with the same `run_flags`.

    Args:
      config: parsed `TF_CONFIG` (see `strategy.check_tf_config`).
      run_flags: JSON-serializable dict of the flags that must agree.
      timeout: seconds to wait; `0` waits forever.
      stop: a `PreemptionFlag` or None; when it is set the wait ends.

    Raises:
      ValueError: if this task's port is taken, or a task runs other flags
        or claims a task name that another process already holds.
      ClusterJoinError: on timeout (exit status 1) or SIGTERM (143).
    """
    run_flags = json.loads(json.dumps(run_flags))  # As the peers see them.
    task = config["task"]
    me = f"{task['type']}:{task.get('index', 0)}"
    names = task_names(config)
    clock = _Clock(timeout, stop)
    if me == names[0]:
        _lead(config, names, run_flags, clock)
    else:
        _follow(config, me, names[0], run_flags, clock)
    logging.info(
        "All %d tasks are up after %.1f s.", len(names), clock.waited()
    )


class _Clock:
    """Raises `ClusterJoinError` once the time is up or SIGTERM came."""

    def __init__(self, timeout, stop):
        self.timeout = timeout
        self.stop = stop
        self.started = time.monotonic()

    def waited(self):
        return time.monotonic() - self.started

    def check(self, missing):
        if self.stop is not None and self.stop.requested:
            raise ClusterJoinError(
                "stopped by SIGTERM while waiting for the other workers of "
                "TF_CONFIG; nothing was written.",
                exit_code=143,
            )
        if self.timeout and self.waited() > self.timeout:
            raise ClusterJoinError(
                f"{missing} within --cluster_timeout={self.timeout:g} s; "
                "start the same command on every task (or raise "
                "--cluster_timeout; 0 waits forever).",
                exit_code=1,
            )


def _bind(address, listen):
    """Binds this task's port (and listens, for the leader)."""
    port = int(address.rpartition(":")[2])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", port))
        if listen:
            server.listen(64)
    except OSError as error:
        server.close()
        raise ValueError(
            f"cannot listen on {address}, this task's address in TF_CONFIG "
            f"({error.strerror}); another process uses the port: stop it "
            "or pick a free port for this task."
        ) from None
    return server


def _lead(config, names, run_flags, clock):
    """The leader: collects every other task's hello, then says go."""
    server = _bind(address_of(config, names[0]), listen=True)
    server.setblocking(False)
    joined = {}  # task name -> connection
    expected = {"flags": run_flags, "cluster": config["cluster"]}
    outcome = {"error": "the leader stopped before the run began"}
    try:
        while len(joined) < len(names) - 1:
            missing = [n for n in names[1:] if n not in joined]
            clock.check(
                f"{len(missing)} task(s) of TF_CONFIG did not start "
                f"(first: {missing[0]} at {address_of(config, missing[0])})"
            )
            try:
                connection, _ = server.accept()
            except BlockingIOError:
                time.sleep(POLL_SECONDS)
                continue
            hello = _read_line(connection, timeout=1.0)
            name = hello.get("task") if isinstance(hello, dict) else None
            if name not in names[1:]:
                connection.close()  # Not one of our tasks.
                continue
            problem = None
            if name in joined:
                problem = f"two processes claim to be task {name}"
            else:
                problem = _difference(name, hello, expected)
            if problem:
                _send(connection, {"error": problem})
                connection.close()
                outcome = {"error": problem}
                raise ValueError(problem + "; start every task alike.")
            _send(connection, {"joined": len(joined) + 1})
            joined[name] = connection
            if len(joined) == len(names) - 1:
                # A task that gave up meanwhile must not be told to go.
                joined = {n: c for n, c in joined.items() if _alive(c)}
        outcome = {"go": True}
    except ClusterJoinError as error:
        outcome = {"error": f"the leader gave up: {error}"}
        raise
    finally:
        # Tell the tasks that joined how it ended, so they need not wait.
        for connection in joined.values():
            _send(connection, outcome)
            connection.close()
        server.close()


def _follow(config, me, leader, run_flags, clock):
    """A follower: says hello to the leader until it answers go."""
    _bind(address_of(config, me), listen=False).close()
    address = address_of(config, leader)
    host, _, port = address.rpartition(":")
    note = "no tfcv chief answered there"
    while True:
        clock.check(f"the leader {leader} at {address} did not start ({note})")
        try:
            connection = socket.create_connection(
                (host.strip("[]"), int(port)), timeout=1.0
            )
        except OSError:
            time.sleep(POLL_SECONDS)
            continue
        with connection:
            hello = {"task": me, "flags": run_flags}
            _send(connection, dict(hello, cluster=config["cluster"]))
            # A tfcv leader acknowledges at once; then it says go or why not.
            lines = _Lines(connection)
            reply = lines.next(
                clock,
                f"the leader {leader} at {address} did not start the run "
                f"({note})",
                patience=_ACK_SECONDS,
            )
            if isinstance(reply, dict) and "joined" in reply:
                note = "it answered but other tasks never reached it"
                reply = lines.next(
                    clock,
                    f"the leader {leader} at {address} did not start the "
                    f"run ({note})",
                )
        if isinstance(reply, dict) and reply.get("go"):
            return
        if isinstance(reply, dict) and "error" in reply:
            message = reply["error"]
            if message.startswith("the leader"):
                raise ClusterJoinError(message.rstrip(".") + ".", exit_code=1)
            raise ValueError(f"the leader refused this task: {message}.")
        note = "the process there is not a tfcv worker of this run"
        time.sleep(POLL_SECONDS)


class _Lines:
    """Reads a connection line by line (two lines may come in one read)."""

    def __init__(self, connection):
        self.connection = connection
        self.buffer = b""
        connection.settimeout(POLL_SECONDS)

    def next(self, clock, missing, patience=None):
        """The next JSON line, or None if the connection ended or was
        silent for `patience` seconds."""
        started = time.monotonic()
        while b"\n" not in self.buffer:
            clock.check(missing)
            if patience is not None and time.monotonic() - started > patience:
                return None
            if len(self.buffer) > _MAX_LINE:
                return None
            try:
                chunk = self.connection.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return _parse(line)


def _alive(connection):
    """False if the peer closed the connection (or it failed)."""
    connection.setblocking(False)
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        connection.setblocking(True)


def _read_line(connection, timeout):
    connection.settimeout(timeout)
    data = b""
    try:
        while b"\n" not in data and len(data) < _MAX_LINE:
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    return _parse(data)


def _parse(data):
    try:
        return json.loads(data.split(b"\n", 1)[0].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _send(connection, message):
    try:
        connection.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # The peer went away; it will retry or give up on its own.


def _difference(name, hello, expected):
    """Why task `name`'s hello does not match this run, or None."""
    if hello.get("cluster") != expected["cluster"]:
        return (
            f"task {name} has another TF_CONFIG cluster "
            f"({hello.get('cluster')!r}; leader: {expected['cluster']!r})"
        )
    if hello.get("flags") != expected["flags"]:
        return _flag_difference(name, hello.get("flags"), expected["flags"])
    return None


def _flag_difference(name, theirs, ours):
    """`task worker:1 was started with other flags: --a=1 (leader: 2)`."""
    theirs = theirs if isinstance(theirs, dict) else {}
    different = [
        f"--{flag}={theirs.get(flag)!r} (leader: {ours.get(flag)!r})"
        for flag in sorted(set(theirs) | set(ours))
        if theirs.get(flag) != ours.get(flag)
    ]
    return (
        f"task {name} was started with other flags than the leader: "
        + ", ".join(different[:4])
        + (" ..." if len(different) > 4 else "")
    )
