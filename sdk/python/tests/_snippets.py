"""The product documentation's snippets about reusable snapshots, verbatim (also in the README).

The second one uses ``snapshot`` from the first; in the third, ``snap_...`` stands for a real id.
"""

SNIPPET_CREATE = """\
from nullspace import Sandbox

sandbox = Sandbox.create(template="base")
sandbox.files.write("/workspace/state.txt", "baseline\\n")

snapshot = sandbox.create_snapshot()
print(snapshot.id)
print(sandbox.files.read("/workspace/state.txt"))
"""

SNIPPET_CHILDREN = """\
from nullspace import Sandbox

first = Sandbox.create(snapshot_id=snapshot.id)
second = Sandbox.create(snapshot_id=snapshot.id)

try:
    first.files.write("/workspace/state.txt", "first child\\n")
    second.files.write("/workspace/state.txt", "second child\\n")

    print(first.files.read("/workspace/state.txt"))
    print(second.files.read("/workspace/state.txt"))
finally:
    first.kill()
    second.kill()
"""

SNIPPET_MANAGE = """\
from nullspace import Snapshot

snapshot = Snapshot.get("snap_...")
print(snapshot.id, snapshot.sandbox_id, snapshot.created_at)

for item in Snapshot.list(sandbox_id=snapshot.sandbox_id):
    print(item.id, item.metadata)

Snapshot.delete(snapshot.id)
"""

# N-way fork, metrics and events (README, "Snapshots"): run as written by test_fork_many_integration.
SNIPPET_FORK_MANY = """\
from nullspace import Sandbox

sandbox = Sandbox.create(template="base")
children = sandbox.fork(count=3)   # one pause of the source, three children
try:
    for child in children:
        print(child.commands.run("hostname").stdout.strip())
    for sample in sandbox.get_metrics():
        print(sample.timestamp, sample.cpu_used_pct, sample.mem_used_bytes)
    for event in sandbox.events(last_event_id=0):
        print(event.id, event.type, event.data)
        if event.type == "forked":
            break
finally:
    for child in children:
        child.kill()
    sandbox.kill()
"""

SNIPPET_TERMINAL = """\
from nullspace import Sandbox

with Sandbox.create() as sbx:
    terminal = sbx.pty.create(cols=100, rows=30, on_data=lambda data: print(data.decode(errors="replace"), end=""))
    sbx.pty.send_input(terminal.pid, "echo $((6 * 7)); exit 3\\n")
    print("exit code:", terminal.wait())
"""

SNIPPET_WATCH = """\
import time
from nullspace import Sandbox

with Sandbox.create() as sbx:
    events = []
    watch = sbx.files.watch_dir("/workspace", events.append, recursive=True)
    sbx.commands.run("mkdir -p /workspace/logs && echo hi > /workspace/logs/today.txt")
    while not any(e.name == "logs/today.txt" for e in events):
        time.sleep(0.1)
    watch.stop()
    print([(e.type, e.name) for e in events])
"""
