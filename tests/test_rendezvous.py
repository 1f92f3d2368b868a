"""The tasks' meeting before TensorFlow joins a multi-worker cluster.

Every task runs `rendezvous` in a thread of this process, on free ports of
127.0.0.1, so the protocol is tested without TensorFlow in the way.
"""

import socket
import threading
import time

import pytest

from tfcv.training import rendezvous as rendezvous_module
from tfcv.training.rendezvous import ClusterJoinError
from tfcv.training.rendezvous import rendezvous


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(addresses, index):
    return {
        "cluster": {"worker": addresses},
        "task": {"type": "worker", "index": index},
    }


def _run_tasks(addresses, flags_per_task, timeout=20):
    """Runs one rendezvous per task in threads; returns their outcomes."""
    outcomes = [None] * len(flags_per_task)

    def task(index):
        try:
            rendezvous(
                _config(addresses, index), flags_per_task[index], timeout
            )
            outcomes[index] = "go"
        except (ValueError, ClusterJoinError) as error:
            outcomes[index] = error

    threads = [
        threading.Thread(target=task, args=(index,))
        for index in range(len(flags_per_task))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return outcomes


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch):
    monkeypatch.setattr(rendezvous_module, "POLL_SECONDS", 0.05)


def test_tasks_with_the_same_flags_all_go():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(3)]

    outcomes = _run_tasks(addresses, [{"seed": 3}] * 3)

    assert outcomes == ["go", "go", "go"]


def test_a_task_with_other_flags_is_refused_on_both_sides():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]

    leader, follower = _run_tasks(
        addresses, [{"seed": 3, "batch_size": 8}, {"seed": 5, "batch_size": 8}]
    )

    assert isinstance(leader, ValueError)
    assert "task worker:1 was started with other flags" in str(leader)
    assert "--seed=5 (leader: 3)" in str(leader)
    assert isinstance(follower, ValueError)
    assert "the leader refused this task" in str(follower)


def test_a_lone_leader_gives_up_naming_the_missing_task():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]

    (outcome,) = _run_tasks(addresses, [{}], timeout=0.5)

    assert isinstance(outcome, ClusterJoinError) and outcome.exit_code == 1
    assert f"first: worker:1 at {addresses[1]}" in str(outcome)


def test_one_task_written_two_ways_does_not_count_as_two():
    port = _free_port()
    addresses = [f"127.0.0.1:{port}", f"localhost:{port}"]

    (outcome,) = _run_tasks(addresses, [{}], timeout=0.5)

    assert isinstance(outcome, ClusterJoinError) and outcome.exit_code == 1


def test_a_follower_facing_another_program_says_so():
    foreign = socket.socket()
    foreign.bind(("127.0.0.1", 0))
    foreign.listen(8)
    addresses = [
        f"127.0.0.1:{foreign.getsockname()[1]}",
        f"127.0.0.1:{_free_port()}",
    ]

    def answer_nonsense():
        for _ in range(3):
            try:
                connection, _ = foreign.accept()
            except OSError:
                return
            connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            connection.close()

    server = threading.Thread(target=answer_nonsense, daemon=True)
    server.start()
    try:
        with pytest.raises(ClusterJoinError) as raised:
            rendezvous(_config(addresses, 1), {}, 1.0)
    finally:
        foreign.close()

    outcome = raised.value
    assert outcome.exit_code == 1
    assert "not a tfcv worker" in str(outcome)


def test_sigterm_ends_the_wait_with_status_143():
    class Stopped:
        requested = True

    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]

    with pytest.raises(ClusterJoinError) as raised:
        rendezvous(_config(addresses, 1), {}, 0, stop=Stopped())

    assert raised.value.exit_code == 143
    assert "nothing was written" in str(raised.value)


def test_a_taken_port_is_a_one_line_error():
    holder = socket.socket()
    holder.bind(("", 0))
    holder.listen(1)
    addresses = [
        f"127.0.0.1:{_free_port()}",
        f"127.0.0.1:{holder.getsockname()[1]}",
    ]
    try:
        with pytest.raises(ValueError, match="another process uses the port"):
            rendezvous(_config(addresses, 1), {}, 1)
    finally:
        holder.close()


def test_a_silent_program_on_the_leader_port_is_not_a_leader(monkeypatch):
    monkeypatch.setattr(rendezvous_module, "_ACK_SECONDS", 0.3)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # Accepts (the kernel does) and never answers.
    addresses = [
        f"127.0.0.1:{silent.getsockname()[1]}",
        f"127.0.0.1:{_free_port()}",
    ]
    try:
        with pytest.raises(ClusterJoinError) as raised:
            rendezvous(_config(addresses, 1), {}, 1.5)
    finally:
        silent.close()

    assert "not a tfcv worker" in str(raised.value)


def test_followers_learn_that_the_leader_gave_up():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    outcomes = [None, None]

    def leader():  # Worker 2 never comes: the leader times out.
        try:
            rendezvous(_config(addresses, 0), {}, 1.0)
        except ClusterJoinError as error:
            outcomes[0] = error

    def follower():
        try:
            rendezvous(_config(addresses, 1), {}, 30.0)
        except ClusterJoinError as error:
            outcomes[1] = error

    threads = [
        threading.Thread(target=leader),
        threading.Thread(target=follower),
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)

    assert outcomes[0].exit_code == 1
    assert outcomes[1].exit_code == 1
    assert "the leader gave up" in str(outcomes[1])
    assert not str(outcomes[1]).endswith("..")
    assert time.monotonic() - started < 10  # Not the follower's 30 s.


def test_a_task_with_another_cluster_is_refused():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    outcomes = [None, None]

    def task(index, cluster):
        try:
            rendezvous(_config(cluster, index), {}, 10.0)
            outcomes[index] = "go"
        except (ValueError, ClusterJoinError) as error:
            outcomes[index] = error

    threads = [
        threading.Thread(target=task, args=(0, addresses[:2])),
        threading.Thread(target=task, args=(1, addresses)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert "has another TF_CONFIG cluster" in str(outcomes[0])
    assert "the leader refused this task" in str(outcomes[1])


def test_a_program_connecting_again_and_again_cannot_stall_the_timeout():
    addresses = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    port = int(addresses[0].rpartition(":")[2])
    done = threading.Event()

    def chatter():
        while not done.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    time.sleep(0.5)  # Connected, silent.
            except OSError:
                time.sleep(0.05)

    client = threading.Thread(target=chatter, daemon=True)
    client.start()
    started = time.monotonic()
    try:
        with pytest.raises(ClusterJoinError):
            rendezvous(_config(addresses, 0), {}, 1.0)
    finally:
        done.set()

    assert time.monotonic() - started < 4
