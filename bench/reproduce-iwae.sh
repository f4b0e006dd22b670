#!/usr/bin/env bash
# Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders" (2015), Table 1, one stochastic layer, on this
# machine: the iwae1 preset (784-200-200-50 tanh, Bernoulli decoder), dynamically binarised MNIST (60k), batch 20,
# Adam (0.9, 0.999, eps 1e-4), 3^i epochs at 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs), trained with k = 1 (VAE)
# or k importance samples (IWAE); test NLL = IW-NLL with k = 5000 on the test set binarised once (fixed seed).
#
#   bench/reproduce-iwae.sh [--k K] [--budget 2h] [--runs DIR] [--stage-eval-images N] [--threads T]
#       Trains (or continues: every epoch is checkpointed in DIR/kK/ckpt, and a re-run resumes from the newest) until
#       the schedule is done or the budget (s, m or h; training plus stage evaluations) is spent, evaluating the
#       IW-NLL (k = 5000, the first N test images, default 1000) at the end of each stage; when the budget ends it
#       evaluates the newest checkpoint on all 10k test images. Then prints the report.
#   bench/reproduce-iwae.sh --eval [--k K]   IW-NLL (k = 5000, all 10k test images) of the newest checkpoint now.
#   bench/reproduce-iwae.sh --report         The paper's table beside ours, for every run in DIR, and exits.
#
# DIR defaults to $IWAE_RUNS or ./iwae-runs. The vae-bench binary (BUILD_DIR/bench/vae-bench) is copied into DIR
# first, so rebuilding the tree does not change a running experiment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-${ROOT}/data}"
RUNS="${IWAE_RUNS:-${PWD}/iwae-runs}"
K=1
BUDGET=""
STAGE_EVAL_IMAGES=1000
THREADS=1
ACTION=train
EVAL_K=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --k) K="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --stage-eval-images) STAGE_EVAL_IMAGES="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --eval-k) EVAL_K="$2"; shift 2 ;;  # for a quick try only; the paper's figure is k = 5000
    --eval) ACTION=eval; shift ;;
    --report) ACTION=report; shift ;;
    *) echo "reproduce-iwae.sh: unknown argument '$1' (see the header of this script)" >&2; exit 2 ;;
  esac
done

# The paper's schedule as EPOCHS:LR stages, and the epoch at which each stage ends.
SCHEDULE="$(python3 -c 'print(",".join("%d:%.6g" % (3**i, 1e-3 * 10 ** (-i / 7)) for i in range(8)))')"
STAGE_ENDS=(1 4 13 40 121 364 1093 3280)
RUN="${RUNS}/k${K}"

report() {
  python3 - "${RUNS}" <<'EOF'
import glob, json, os, sys
runs = sys.argv[1]
ends = [1, 4, 13, 40, 121, 364, 1093, 3280]
def load(path):
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
print("Burda et al. (2015), Table 1, MNIST, one stochastic layer: test NLL (IW-NLL, k = 5000), nats")
print("| model | trained with k=1 | k=5 | k=50 |\n|---|---|---|---|")
print("| VAE (paper) | 86.76 | 86.47 | 86.35 |\n| IWAE (paper) | 86.76 | 85.54 | 84.78 |")
dirs = sorted((d for d in glob.glob(os.path.join(runs, "k*"))
               if os.path.isdir(d) and os.path.basename(d)[1:].isdigit()),
              key=lambda d: int(os.path.basename(d)[1:]))
if not dirs:
    print(f"\nno runs in {runs} yet"); sys.exit(0)
def stage_of(epochs):
    return next((i for i, end in enumerate(ends) if epochs < end), len(ends))
print(f"\nOurs (vae-service, iwae1 preset, EMA weights served, runs in {runs}); the paper trains 3280 epochs:")
print("| run | epochs reached (stage i of 0..7) | IW-NLL, 10k test images | of the checkpoint at epoch | test -ELBO (1 sample) at the last epoch |")
print("|---|---|---|---|---|")
stage_rows = {}
for d in dirs:
    k = int(os.path.basename(d)[1:])
    name = "VAE k=1" if k == 1 else f"IWAE k={k}"
    state = load(os.path.join(d, "state.json")) or {}
    reached = state.get("epochs_done", 0)
    partial = state.get("step_in_epoch", 0)
    try:  # a run in progress: its log has the epochs finished since state.json was written
        with open(os.path.join(d, "train.log")) as f:
            logged = [int(l.split()[1].split("/")[0]) for l in f if l.startswith("epoch ")]
        if logged and logged[-1] > reached:
            reached, partial = logged[-1], 0
    except (OSError, ValueError, IndexError):
        pass
    finals = [load(p) for p in glob.glob(os.path.join(d, "final-*.json"))]
    finals = [f for f in finals if f and f.get("iw_images", 0) >= 10000]
    best = max(finals, key=lambda f: (f["epochs_done"], f["step_in_epoch"]), default=None)
    elbo = state.get("test_loss")
    elbo = "-" if elbo is None else f"{elbo:.2f}"
    reached_text = f"{reached}" + (f" (+{partial} steps)" if partial else "") + f" (stage {stage_of(reached)})"
    if best:
        at = f"{best['epochs_done']}" + (f" (+{best['step_in_epoch']} steps)" if best["step_in_epoch"] else "")
        print(f"| {name} | {reached_text} | **{best['iw_nll']:.2f}** +- {best['iw_nll_stderr']:.2f} (k={best['iw_k']}) | {at} | {elbo} |")
    else:
        print(f"| {name} | {reached_text} | (not yet: bench/reproduce-iwae.sh --runs {runs} --eval --k {k}) | | {elbo} |")
    for i, end in enumerate(ends):
        s = load(os.path.join(d, f"stage-{i}.json"))
        if s:
            stage_rows.setdefault(i, {})[k] = s
if stage_rows:
    ks = [int(os.path.basename(d)[1:]) for d in dirs]
    print("\nAt the end of each stage i (3^i epochs at 1e-3 * 10^(-i/7)), IW-NLL k=5000 on the first N test images, "
          "same images and seeds for every run (equal epochs):")
    print("| stage | epochs | " + " | ".join(("VAE k=1" if k == 1 else f"IWAE k={k}") for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    for i in sorted(stage_rows):
        cells = []
        for k in ks:
            s = stage_rows[i].get(k)
            cells.append(f"{s['iw_nll']:.2f} +- {s['iw_nll_stderr']:.2f} (N={s['iw_images']}, k={s['iw_k']})" if s else "-")
        print(f"| {i} | {ends[i]} | " + " | ".join(cells) + " |")
EOF
}

if [ "${ACTION}" = report ]; then
  report
  exit 0
fi

mkdir -p "${RUN}"
BENCH_SRC="${BUILD_DIR:-${ROOT}/build}/bench/vae-bench"
BENCH="${RUN}/vae-bench"
if [ -x "${BENCH_SRC}" ]; then
  cp "${BENCH_SRC}" "${BENCH}.new" && mv "${BENCH}.new" "${BENCH}"
fi
[ -x "${BENCH}" ] || { echo "reproduce-iwae.sh: build vae-bench first (scripts/build.sh)" >&2; exit 1; }
COMMON=(--data_dir="${DATA_DIR}" --dataset=mnist --binarize --threads="${THREADS}" --json)

# IW-NLL of the newest checkpoint on N test images (-1: all) into FILE, and the run's position into state.json.
iwnll() {
  local images="$1" file="$2"
  "${BENCH}" iwnll "${COMMON[@]}" --checkpoint="${RUN}/ckpt" --iw_k="${EVAL_K}" --iw_images="${images}" \
    2>>"${RUN}/train.log" | tail -n 1 >"${file}.tmp"
  mv "${file}.tmp" "${file}"
  echo "$(date -u +%FT%TZ) IW-NLL: $(cat "${file}")" >>"${RUN}/train.log"
}

final_eval() {
  local tmp="${RUN}/final.json.tmp"
  iwnll -1 "${tmp}"
  local at
  at="$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%d-%d" % (j["epochs_done"], j["step_in_epoch"]))' "${tmp}")"
  mv "${tmp}" "${RUN}/final-${at}.json"
}

if [ "${ACTION}" = eval ]; then
  final_eval
  report
  exit 0
fi

seconds() {
  case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
deadline=0
[ -n "${BUDGET}" ] && deadline=$(( $(date +%s) + $(seconds "${BUDGET}") ))
echo "$(date -u +%FT%TZ) start: k=${K} budget=${BUDGET:-none} schedule=${SCHEDULE}" >>"${RUN}/train.log"

stopped=0
for i in "${!STAGE_ENDS[@]}"; do
  end="${STAGE_ENDS[$i]}"
  max_seconds=0
  if [ "${deadline}" -gt 0 ]; then
    max_seconds=$(( deadline - $(date +%s) ))
    if [ "${max_seconds}" -le 0 ]; then stopped=1; break; fi
  fi
  # Continues from the newest checkpoint in ckpt/; returns at once when the stage is already trained.
  "${BENCH}" train "${COMMON[@]}" --preset=iwae1 --batch_size=20 --adam_eps=1e-4 --lr_schedule="${SCHEDULE}" \
    --iw_samples="${K}" --epochs="${end}" --checkpoint_dir="${RUN}/ckpt" --max_seconds="${max_seconds}" \
    2>>"${RUN}/train.log" | tail -n 1 >"${RUN}/state.json.tmp"
  mv "${RUN}/state.json.tmp" "${RUN}/state.json"
  if python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["stopped"] else 1)' "${RUN}/state.json"; then
    stopped=1
    break
  fi
  [ -f "${RUN}/stage-${i}.json" ] || iwnll "${STAGE_EVAL_IMAGES}" "${RUN}/stage-${i}.json"
done
final_eval
report
