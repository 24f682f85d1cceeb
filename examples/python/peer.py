# A Python peer of a Rust cluster: it joins through a seed, serves typed methods to every
# member, and calls members by name and virtual actors wherever they live.
#
#   cargo run --release -- node --name r1 --listen 127.0.0.1:4000     # another terminal
#   python examples/python/peer.py 127.0.0.1:4000
import sys
import time

import meshrpc


class Geometry:
    def area(self, width: float, height: float) -> float:
        """The area of a width × height rectangle."""
        return width * height


seed = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:4000"
with meshrpc.Node("py1", seeds=[seed]) as node:
    node.register_instance(Geometry())
    deadline = time.monotonic() + 10
    while not any(m.status == "up" and m.name != "py1" for m in node.members()):
        if time.monotonic() > deadline:
            sys.exit(f"no member reached through {seed}")
        time.sleep(0.05)
    others = [m.name for m in node.members() if m.name != "py1"]
    print("members:", node.members())
    print(f"square(5) on {others[0]}:", node.proxy(others[0]).square(5))
    print("vcounter/user-42:", node.actor("vcounter", "user-42").incr(1))
    print("serving area() at", node.addr, "- Ctrl-C to leave")
    node.serve_forever()
