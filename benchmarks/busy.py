"""Each family's CPU path on a busy machine: idle, then beside 1 and 2 competing processes (each a plain
Python loop spinning on one core, started and stopped here), for several thread settings, in one run.

    python -m benchmarks.busy                                   # every family, the rows below
    python -m benchmarks.busy --families musicgen,sao-int8 --repeats 2 --markdown BENCHMARKS.md
    python -m benchmarks.busy --families musicgen --rows spin=0:2,spin=10000:2,libgomp:2   # OpenMP waits

--size tiny runs the test suite's tiny models: a check that the benchmark runs, not a figure.

A row is POLICY:THREADS. POLICY is how OpenMP threads wait, set in the environment of a fresh process
(libgomp reads it when torch loads): "tunesmith" (tunesmith's own default), "libgomp" (libgomp's own:
GOMP_SPINCOUNT=300000, what tunesmith ran with before), "passive", "active", "spin=N" (GOMP_SPINCOUNT=N).
THREADS is 1, 2, ... (as threads= sets them: used as given) or "default" (tunesmith's default: one per
available core, fewer while other processes keep cores busy).

Each variant is built, with random weights at the real sizes, in one child process per policy; the
children of a variant live side by side (as many as memory holds) and take turns, one run each in
round-robin (every other round in reverse order), so that the machine's own drift, and whatever the run
before leaves behind, falls on every row alike. Runs are short (MusicGen:
--seconds of audio; the diffusion families: --steps steps), after a warm-up at each thread setting.
Times are end to end (text, generation, decoding). Other processes' CPU use during each run is
measured (/proc/stat less this benchmark's processes) and reported; --wait and --retries hold runs
back, or run them again, while it is above 0.1 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

FAMILIES = ("musicgen", "musicgen-int8", "sao", "sao-int8", "acestep", "acestep-int8", "sa3", "sa3-int8")
ROWS = "tunesmith:1,tunesmith:2,tunesmith:default,libgomp:2"
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# A competitor: one core kept busy; it stops by itself if the benchmark dies without stopping it.
MARK = "@busy "  # a child's answers on stdout, apart from what libraries print there
QUIET = 0.1  # cores other processes may use beside a run (system noise is about 0.01)
SPINNER = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(10 ** 6): pass\n"


def policy_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES and k != "OMP_NUM_THREADS"}
    if policy == "libgomp":
        env["GOMP_SPINCOUNT"] = "300000"  # libgomp's built-in default
    elif policy in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    elif policy.startswith("spin="):
        env["GOMP_SPINCOUNT"] = policy[5:]
    elif policy != "tunesmith":  # tunesmith: none set, so that tunesmith sets its own
        raise SystemExit(f"unknown policy {policy!r}")
    return env


class Competitors:
    """`n` spinning processes while inside the block."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", SPINNER]) for _ in range(self.n)]
        time.sleep(0.5 if self.n else 0)  # started and spinning before the first run
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def build(variant: str, args):
    """-> a callable running one short generation of `variant`."""
    import torch

    family, _, quantize = variant.partition("-")
    quantize = quantize or None
    if family == "musicgen":
        from tunesmith import MusicGen

        from .common import checkpoint_for

        model = MusicGen.from_pretrained(checkpoint_for(args.size), device="cpu", quantize=quantize)
        return lambda: model.generate("calm lofi piano, 80 bpm", duration=args.seconds, seed=1)
    if family == "sao":
        import tunesmith

        from .stable_audio_e2e import PROMPT, small_checkpoint

        model = tunesmith.load(small_checkpoint() if args.size == "small" else tiny_sao(), device="cpu",
                               quantize=quantize)
        seconds = min(args.sao_seconds, model.max_seconds)
        return lambda: model.generate(PROMPT, duration=seconds, seed=0, steps=args.steps)
    if family == "acestep":
        from tunesmith.acestep.cpu import for_cpu
        from tunesmith.acestep.model import AceStep
        from tunesmith.device import pick_dtype

        from .acestep_cpu import LYRICS, PROMPT
        from .acestep_cpu import build as build_acestep

        parts, _ = build_acestep("turbo-2b" if args.size == "small" else "tiny")  # diffusers' float32 modules, as load() gives them here
        dtype = pick_dtype(None, torch.device("cpu"))  # as from_pretrained picks it
        if quantize or dtype != torch.float32:
            parts = for_cpu(parts, dtype, quantize)  # as from_pretrained builds the CPU path
        model = AceStep(parts, "random turbo-2b", torch.device("cpu"), dtype, quantize)
        verse = LYRICS.split("[chorus]")[0]  # words a 10 s song can sing
        return lambda: model.generate(PROMPT, lyrics=verse, duration=args.acestep_seconds, seed=0, steps=args.steps)
    if family == "sa3":
        from .stable_audio_e2e import PROMPT

        model = sa3_model(args.size, quantize)
        return lambda: model.generate(PROMPT, duration=args.sao_seconds, seed=0, steps=args.steps)
    raise SystemExit(f"unknown family {variant!r}: {', '.join(FAMILIES)}")


def sa3_model(size: str, quantize: str | None):
    """Stable Audio 3 as load() gives it on this CPU: random weights at Small's sizes (benchmarks.stable_audio3_cpu),
    or the test suite's tiny pipeline."""
    import torch

    import tunesmith
    from tunesmith.device import pick_dtype
    from tunesmith.stable_audio3.cpu import for_cpu
    from tunesmith.stable_audio3.model import StableAudio3
    from tunesmith.stable_audio3.parts import StableAudio3Config, StableAudio3Parts

    from .common import CACHE

    if size != "small":
        from tests.stable_audio3.tiny import save_tiny_pipeline

        folder = CACHE / "sa3-tiny"
        if not (folder / "model_index.json").exists():
            save_tiny_pipeline(folder)
        return tunesmith.load(folder, device="cpu", quantize=quantize)
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    from tests.stable_audio3.tiny import tiny_tokenizer

    from .stable_audio3_cpu import build as build_sa3

    t5, dit, vae = build_sa3("small")
    config = StableAudio3Config(sample_rate=44100, hop=4096, latent_dim=256, audio_channels=2, longest=120.0,
                                sampler="pingpong", steps=8, latent_multiple=2)
    seconds = StableAudio3DurationEmbedder(output_dim=768, fourier_dim=256).eval()
    parts = StableAudio3Parts(config, tiny_tokenizer(), t5, seconds, dit, vae)
    cpu = torch.device("cpu")
    dtype = pick_dtype(None, cpu)  # as from_pretrained picks it
    if quantize or dtype != torch.float32:
        parts = for_cpu(parts, dtype, quantize)  # as from_pretrained builds the CPU path
    return StableAudio3(parts, "random sa3-small", cpu, dtype, quantize)


def tiny_sao():
    from tests.stable_audio.tiny import save_tiny_tools_checkpoint

    from .common import CACHE

    folder = CACHE / "stable-audio-tiny"
    if not (folder / "model.safetensors").exists():
        save_tiny_tools_checkpoint(folder)
    return folder


def set_threads(threads: str):
    """As from_pretrained(threads=n) sets them (pinned), or tunesmith's default (threads=None)."""
    import torch

    from tunesmith import generation
    from tunesmith.threads import available_cores

    pinned = threads != "default"
    torch.set_num_threads(int(threads) if pinned else available_cores())
    generation._pinned = pinned


def others_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by every process but this one and `pids` (its competitors), from
    /proc/stat's total less their own: a difference over a run is what other people's work took."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    busy = (sum(values) - values[3] - values[4]) / tick
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            busy -= (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except OSError:
            pass
    return busy - time.process_time()


def quiet(pids: list[int], wait: float) -> float:
    """Wait up to `wait` seconds for other processes' CPU use (cores, over 2 s) to drop below
    QUIET; -> the last figure (0 without waiting)."""
    deadline = time.monotonic() + wait
    while wait > 0:
        before, start = others_seconds(pids), time.monotonic()
        time.sleep(2.0)
        others = (others_seconds(pids) - before) / (time.monotonic() - start)
        if others < QUIET or time.monotonic() > deadline:
            return others
        print(f"others use {others:.2f} cores: waiting", file=sys.stderr, flush=True)
        time.sleep(10)
    return 0.0


def measure(run, pids: list[int], args) -> tuple[float, float]:
    """One run's seconds and other processes' CPU use meanwhile (cores), run again (up to --retries
    times, after waiting for quiet) while that use is above QUIET."""
    import torch

    pids = [p for p in pids if p != os.getpid()]  # this process's own time is counted apart
    for attempt in range(args.retries + 1):
        quiet(pids, args.wait)
        before, start = others_seconds(pids), time.perf_counter()
        with torch.inference_mode():
            run()
        seconds = time.perf_counter() - start
        others = (others_seconds(pids) - before) / seconds
        if others < QUIET:
            break
        print(f"others used {others:.2f} cores during the run: again", file=sys.stderr, flush=True)
    return seconds, others


def child(args):
    """One variant under one policy, a server: builds, warms up each thread setting, says it is ready,
    then runs one generation per request on stdin (threads, pids to leave out of others' use)."""
    import torch

    run = build(args.child, args)
    for threads in dict.fromkeys(args.child_threads.split(",")):
        set_threads(threads)
        with torch.inference_mode():
            run()  # warm-up: pages faulted in, kernels built, oneDNN's primitives made for this count
    reply({"rss": resident_bytes()})
    for line in sys.stdin:
        ask = json.loads(line)
        set_threads(ask["threads"])
        seconds, others = measure(run, ask["pids"], args)
        print(f"{args.child} {ask['policy']}:{ask['threads']}, {ask['competitors']} competitors: {seconds:.2f} s",
              file=sys.stderr, flush=True)
        reply({"seconds": seconds, "others": others})


def reply(message: dict):
    print(MARK + json.dumps(message), flush=True)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


class Child:
    """A child process serving one variant under one policy."""

    def __init__(self, variant: str, policy: str, threads: list[str], argv: list[str]):
        self.policy = policy
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.busy", *argv, "--child", variant,
                                      "--child-threads", ",".join(threads)], env=policy_env(policy),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.rss = self._answer()["rss"]

    def _answer(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise SystemExit(f"a child process ({self.policy}) ended with status {self.proc.wait()}")

    def run(self, threads: str, pids: list[int], competitors: int) -> dict:
        ask = {"threads": threads, "pids": pids, "policy": self.policy, "competitors": competitors}
        self.proc.stdin.write(json.dumps(ask) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def batches(variant: str, rows: list[tuple[str, str]], argv: list[str]):
    """Children, one per policy, in batches that fit in memory together (each about as large as the
    first): the runs of a batch interleave, so that the machine's drift falls on every row alike."""
    pending = list(dict.fromkeys(p for p, _ in rows))
    while pending:
        batch = []
        while pending and (not batch or available_bytes() > 1.3 * batch[0].rss):
            policy = pending.pop(0)
            batch.append(Child(variant, policy, [t for p, t in rows if p == policy], argv))
        yield batch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=("small", "tiny"),
                        help="small: MusicGen small, SAO small, ACE-Step 2B turbo; tiny: the tests' (no speed claims)")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--rows", default=ROWS, help="comma list of POLICY:THREADS")
    parser.add_argument("--competitors", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--seconds", type=float, default=0.5, help="MusicGen: seconds of audio a run")
    parser.add_argument("--sao-seconds", type=float, default=4.0, help="Stable Audio (Open and 3): seconds of audio a run")
    parser.add_argument("--acestep-seconds", type=float, default=10.0, help="ACE-Step: seconds of song a run")
    parser.add_argument("--steps", type=int, default=2, help="the diffusion families' steps a run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (the median is shown)")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait before each run for other processes to go quiet")
    parser.add_argument("--retries", type=int, default=0,
                        help="runs again, up to this many times, a run beside which other processes were busy")
    parser.add_argument("--markdown", help="append the table to this markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    started, load_before, own = time.perf_counter(), os.getloadavg(), child_argv(argv)
    rows = [tuple(r.split(":")) for r in args.rows.split(",")]
    results = {(v, p, t): {} for v in args.families.split(",") for p, t in rows}
    foreign = []
    for variant in args.families.split(","):
        for batch in batches(variant, rows, own):
            try:
                for n in args.competitors:
                    with Competitors(n) as competitors:
                        pids = [p.pid for p in competitors.procs] + [c.proc.pid for c in batch] + [os.getpid()]
                        order = [(c, p, t) for c in batch for p, t in rows if p == c.policy]
                        for repeat in range(args.repeats):  # round-robin, every other round in reverse: no row
                            for c, p, t in order[::-1] if repeat % 2 else order:  # always runs first
                                got = c.run(t, pids, n)
                                results[(variant, p, t)].setdefault(n, []).append(got["seconds"])
                                foreign.append(got["others"])
            finally:
                for c in batch:
                    c.close()
    table = render(results, args, own, load_before, foreign, time.perf_counter() - started)
    from .common import report

    report(table, args.markdown)


def child_argv(argv) -> list[str]:
    """The run's own options, for the child processes (without --markdown)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--markdown" in argv:
        i = argv.index("--markdown")
        del argv[i:i + 2]
    return [a for a in argv if not a.startswith("--markdown=")]


def render(results: dict, args, argv: list[str], load_before, foreign: list[float], wall: float) -> str:
    from .common import hardware

    loads = sorted(n for n in args.competitors if n)
    lines = [f"### CPU on a busy machine ({datetime.date.today().isoformat()})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.busy {' '.join(argv)}`. "
             f"Load average before the run: {load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min); "
             f"other processes' CPU use during a run (besides the competitors): at most {max(foreign, default=0):.2f} cores. "
             f"Median of {args.repeats} run(s) a cell; the whole table took {wall / 60:.0f} min.", "",
             "| family / variant | OpenMP waits | threads | idle (s) | "
             + " | ".join(f"{n} busy (s) | share of idle | vs 1 thread" for n in loads) + " |",
             "| --- | --- | --- | ---: |" + " ---: | ---: | ---: |" * len(loads)]
    for (variant, policy, threads), times in results.items():
        med = {n: statistics.median(v) for n, v in times.items()}
        one = results.get((variant, "tunesmith", "1"))
        cells = [f"{variant} | {policy} | {threads} | {med.get(0, float('nan')):.2f}"]
        for n in loads:
            vs_one = f"{statistics.median(one[n]) / med[n]:.2f}x" if one and n in one else ""
            cells.append(f"{med[n]:.2f} | {100 * med[0] / med[n]:.0f}% | {vs_one}" if 0 in med else f"{med[n]:.2f} | |")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "share of idle: the row's idle time over its time under load; vs 1 thread: the time of "
              "threads 1 (tunesmith's waits) under the same load over the row's (above 1x: faster)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
