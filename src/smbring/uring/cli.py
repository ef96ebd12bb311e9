"""``smbring features [--json]``: what this kernel's io_uring offers."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("features", help="show the kernel's io_uring ops and setup flags")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from smbring.uring import features

    f = features()
    if args.json:
        print(json.dumps(f.as_dict(), indent=2))
        return 0 if f.available else 1
    print(f"kernel            {f.kernel}")
    if not f.available:
        print(f"io_uring          unavailable: {f.reason}")
        return 1
    print("io_uring          available")
    print(f"default ring      {' '.join(f.default_setup_flags)}")
    print("setup flags       " + "  ".join(f"{n}:{'yes' if ok else 'no'}"
                                          for n, ok in f.setup_flags.items()))
    print(f"kernel features   {' '.join(f.kernel_features)}")
    names = sorted(f.ops)
    width = max(len(n) for n in names) + 2
    print(f"ops               {sum(f.ops.values())} of {len(names)} supported")
    cols = 4
    for i in range(0, len(names), cols):
        row = names[i:i + cols]
        print("  " + "".join(f"{n:<{width}}{'yes' if f.ops[n] else 'no ':<5}" for n in row))
    return 0
