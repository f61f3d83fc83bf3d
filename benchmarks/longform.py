"""Memory of long pieces stays bounded: peak resident memory for 1, 5 and 10 minutes of music.

    python -m benchmarks.longform                      # the tiny test checkpoint (fast; engine overhead only)
    python -m benchmarks.longform --size small         # real small architecture, random weights (slow on CPU)

Each length runs in a fresh process so that peaks do not mix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import report


def child(folder: str, minutes: float):
    from tunesmith import MusicGen

    mg = MusicGen.from_pretrained(folder, device="cpu")
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    clip, = mg.generate("slow ambient pads", duration=minutes * 60, seed=1)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(minutes=minutes, seconds=clip.duration, wall=wall, loaded_mb=loaded, peak_mb=peak)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default=None, choices=["small", "medium", "large"])
    parser.add_argument("--minutes", default="1,5,10")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    if args.size:
        from .common import checkpoint_for

        folder = checkpoint_for(args.size)
    else:
        from tests.checkpoints import save_checkpoint

        folder = Path(tempfile.mkdtemp()) / "tiny"
        folder.mkdir()
        save_checkpoint(folder)
    rows = []
    for minutes in (float(m) for m in args.minutes.split(",")):
        out = subprocess.run([sys.executable, "-m", "benchmarks.longform", "--child", str(folder), str(minutes)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(f"| {r['minutes']:g} min | {r['seconds']:.0f} s | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | "
                    f"{r['peak_mb'] - r['loaded_mb']:.0f} | {r['wall']:.0f} |")
        print(rows[-1], flush=True)
    model = f"musicgen-{args.size} architecture" if args.size else "the tiny test checkpoint"
    table = "\n".join([f"### Long pieces: peak memory ({model})", "",
                       f"Command: `python -m benchmarks.longform{' --size ' + args.size if args.size else ''}`.",
                       "", "| piece | audio | RSS after load (MB) | peak RSS (MB) | growth (MB) | wall (s) |",
                       "| --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]))
    else:
        main()
