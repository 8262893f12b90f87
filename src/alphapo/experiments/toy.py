"""The ``toy`` job: SFT -> on-policy pairs -> preference training -> gold-judge evaluation, in the toy world.

This module and ``alphapo.experiments.toy_ra`` (the reward-augmented variant, which reuses this module's
SFT stage and helpers) are the only places the experiments package calls the toy-world pipeline
(``alphapo.toyworld``, ``alphapo.generation``, ``alphapo.training.train``, ``alphapo.evaluation``); the
steps are those of ``alphapo quickstart`` (see ``alphapo.quickstart``), split so that what runs of a
seed share is computed once:

- stage ``toy_sft`` (per seed and SFT sizes): the tiny Llama SFT policy trained on the noisy teacher
  (``alphapo.toyworld.sft.train_sft``);
- stage ``toy_pairs`` (per seed, SFT and pair settings): ``k`` samples per training prompt at
  ``pair_temperature`` from the SFT policy, ranked by the pair judge (``gold``: the gold judge;
  ``proxy``: ``ProxyJudge`` with ``proxy_length_bias`` and ``proxy_noise_std``, a length-biased imperfect
  judge), best vs worst; and the SFT policy's greedy responses on the evaluation prompts, gold-scored.
  Its folder also holds the seed's reference log-prob cache (``reference_cache/``), shared by every run
  of the seed whose loss needs a reference model: the first such run computes it under a file lock, the
  others wait and read it, so it is computed once per seed. It also keeps every sample with its judge
  score (``samples.json``) and the k-response records (``responses.jsonl``: the k samples of each prompt
  in sampling order with their judge scores, ``alphapo.data.pairs.select_pairs`` mode ``all``; prompts
  whose scores all tie or with an empty sample are dropped), with their own cache
  (``reference_cache_responses/``). With ``pair_judge: rm`` the samples are gold-scored and no pairs are
  written here: ``toy_rm`` ranks them;
- stage ``toy_rm`` (per seed, world and reward-model sizes; a no-op unless ``pair_judge: rm``): the toy
  Bradley-Terry reward model (``alphapo.toyworld.reward_model``: ``rm_n_train`` gold-labelled teacher
  pairs of the world's ``p_error`` / ``p_verbose``, ``rm_steps`` steps, hidden size ``rm_hidden_size``;
  42 s on one core of a busy 2-core machine at the defaults), which scores every ``toy_pairs`` sample
  (``HFRewardJudge``); its ``pairs.jsonl`` / ``responses.jsonl`` are ranked by, and carry, those scores,
  so the RPO losses' explicit reward is the learned one. The stage reports ``heldout_accuracy`` (pairs of
  tasks it never trained on), ``heldout_pearson_with_gold`` and ``pairs_gold_agreement`` (the fraction
  of its on-policy pairs whose chosen response the gold judge also scores higher, ties half);
- the job: train ``loss`` from the SFT policy on the pairs (AdamW, cosine schedule, warmup 0.1, one
  epoch by default), then evaluate greedy responses on two disjoint slices of the held-out prompts:
  ``val`` (the first ``n_val``) and ``test`` (the next ``n_test``), never seen in SFT or pairs.

Metrics, for split ``s`` in ``val`` and ``test`` (each against the SFT policy's greedy response on the
same prompt, judged by the gold judge): ``s/win_rate`` (ties count half), ``s/lc_win_rate``
(length-controlled), ``s/gold_score`` (mean 1..10), ``s/correctness`` (mean 0..1),
``s/correctness_gain`` (mean over prompts of the run's correctness minus the SFT policy's greedy
correctness on the same prompt: the quickstart's headline), ``s/length`` (mean words), plus
``train/steps``. Per-prompt lists: ``s/gold_score``, ``s/correctness`` and ``s/win`` (1, 0.5 or 0 per
prompt), for paired comparisons. The run's greedy responses are kept in ``work/responses.json`` and the
training log in ``work/train/metrics.jsonl``.

Diagnostics (``alphapo.training.DiagnosticsConfig``; they never change what is trained):

- ``probe_size`` N (and ``probe_steps``): the trainer's fixed probe set, the first N training pairs of the
  seed (the same pairs for every run of the seed), forwarded before the first step, every
  ``probe_steps`` and at the end. The run reports the end-of-training ``probe/chosen_lnorm``,
  ``probe/rejected_lnorm``, ``probe/margin_lnorm`` (means of ``logp(y)/|y|`` and of the per-pair margin)
  with the margin's ``/q1``, ``/median``, ``/q3`` (AlphaPO Figure 13), and ``probe/chosen_lnorm_change``
  and ``probe/rejected_lnorm_change``, end minus start: a negative chosen change is likelihood
  displacement (AlphaPO Figure 2). The whole curve is in ``work/train/metrics.jsonl`` (``"split":
  "probe"``).
- ``reference_kl`` true: the ``kl/*`` metrics for reference-free losses too (AlphaPO Figures 10-11); the
  run reports the last logged batch's ``train/kl_seq_k1`` and ``train/kl_token_k1`` (DPO-style losses
  always log them): drift on the off-policy training pairs, not the KL (``alphapo.training.metrics``). The curve over training is in ``work/train/metrics.jsonl``.

Evaluation during training (AlphaPO Figures 10-11), with ``eval_steps`` N (default unset: only the
final policy is evaluated, as before): the trainer saves a checkpoint every N optimizer steps (its
``logging.save_steps``; saving reads the weights and never changes them, so the trained weights are
bit-identical with and without), and after training :func:`evaluate_over_training` evaluates the SFT
policy (step 0), every checkpoint and the final policy on the ``val`` prompts:

- ``win_rate``: gold win rate of the greedy responses against the SFT policy's (as ``val/win_rate``; the
  last point is the run's ``val/win_rate``);
- ``kl_k1``, ``kl_k3``, ``kl_token_k1``: KL(pi || pi_SFT) from ``eval_samples`` responses per ``val`` prompt
  sampled from the policy itself at temperature 1 (plain sampling, ``max_new_tokens``), each scored under
  pi and pi_SFT: ``d = log pi(y|x) - log pi_SFT(y|x)``; k1 = mean(d) is unbiased for the KL of the
  policy's response distribution, k3 = mean(expm1(-d) + d) is Schulman's lower-variance estimator
  (``alphapo.training.metrics.sampled_kl_estimates``). With 500 ``val`` prompts and 4 samples each the
  estimate averages 2,000 sequences.

The curve is the result's ``extra.eval_curve`` (one record per point: ``step``, those metrics,
``n_samples``, ``truncated_fraction``), and the run reports the final point's ``val/kl_sft_k1``,
``val/kl_sft_k3`` and ``val/kl_sft_token_k1``. The checkpoints are deleted once evaluated. Take ``eval_steps`` even: the toy job logs every 2 steps,
and a checkpoint also closes the logging window, so an odd ``eval_steps`` splits some windows of
``work/train/metrics.jsonl`` (the logged averages, never the training).
Deviations: responses are scored as the trainer tokenises them (decoded text re-encoded, EOS appended);
a sample cut at ``max_new_tokens`` (``truncated_fraction``) is scored with an EOS it did not sample.

The loss hyper-parameters ``beta``, ``gamma``, ``alpha``, ``eta`` default to "unset": an unset one is not
passed, so the loss uses its own default; a set one that the loss does not take is an error. The RPO
losses (``rpo_bwd``, ``rpo_fwd``, ``rpo_sqr``) take the pairs' judge scores as their explicit reward: the
gold judge's with ``pair_judge: gold``, the proxy judge's with ``pair_judge: proxy``, the learned reward
model's with ``pair_judge: rm``.

The RPO paper's ablation axes (Reward-aware Preference Optimization, NVIDIA 2025):

- ``train_responses`` (default 2): 2 trains a pairwise loss on the best-vs-worst pair of the ``k``
  samples (the run as it always was); n > 2 trains a k-response loss on all ``k = n`` samples of each
  prompt (``responses.jsonl``; ``k`` must equal n). Which k-response loss is the recipe's ``loss``; the
  RPO ablation recipes use the all-pairs forms (``rpo_bwd_all_pairs``, ``rpo_fwd_all_pairs``,
  ``rpo_sqr_all_pairs``) rather than ``rpo_multi``, because at k = 2 each equals its pairwise distance
  exactly, so k = 2 against k = 4 changes the number of responses and nothing else (``rpo_multi``'s
  softmax KL equals only ``rpo_bwd`` at k = 2). A pairwise loss with n > 2, or a k-response loss with 2,
  is an error.
- ``rounds`` R (default 1: offline, the run as it always was): online iterative training. The pair
  prompts are cut into R consecutive slices (``round_plan``), one per round: round 1 trains on the
  seed's shared records of slice 1 (SFT samples, as offline), round r > 1 samples ``k`` responses from
  round r-1's policy on slice r, ranks them with the run's judge (gold, proxy or the seed's reward
  model) and keeps pairs or all k as offline. Each round trains from the previous round's policy, and
  that policy is the reference model of DPO/RPO (SFT in round 1), as in iterative DPO (Self-Rewarding
  Language Models, Yuan et al. 2024: each iteration is initialised from, and regularised towards, the
  previous one). The step budget is the offline run's, ``epochs * ceil(n_records / batch_size)`` over
  the seed's offline records, split evenly over the rounds (``max_steps`` per round), so offline and
  online take the same number of optimizer steps (batches of ``batch_size`` records). The
  final policy is evaluated as offline; ``round<r>/val_win_rate`` is each round's policy's val win rate
  against SFT (the last one is ``val/win_rate``), ``round<r>/records`` and ``round<r>/steps`` its data
  and steps. Deviations: every round restarts AdamW and its warmup + cosine schedule (offline has one
  schedule over all steps); with R > 1 the probe and KL diagnostics are the last round's (its data,
  its reference); records per round differ from offline's slice when the current policy's samples tie
  more or less often.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from alphapo.errors import UserError
from alphapo.experiments.registry import Param, register_job, register_stage

__all__ = ["SFT_KEYS", "PAIR_KEYS", "RM_KEYS", "round_plan"]

SFT_KEYS = ("n_train", "n_heldout", "p_error", "p_verbose", "sft_steps", "sft_hidden_size", "sft_layers",
            "sft_heads", "sft_kv_heads", "sft_intermediate_size", "sft_batch_size", "sft_lr", "sft_warmup_steps")
PAIR_KEYS = ("n_train", "n_heldout", "n_pair_prompts", "k", "pair_temperature", "max_new_tokens", "pair_judge",
             "proxy_length_bias", "proxy_noise_std", "n_val", "n_test")
RM_KEYS = ("pair_judge", "p_error", "p_verbose", "rm_n_train", "rm_n_heldout", "rm_steps", "rm_hidden_size")

PARAMS = {
    # SFT (defaults: the quickstart's)
    "n_train": Param(4000, int, low=1), "n_heldout": Param(500, int, low=2),
    "p_error": Param(0.55, float, low=0.0, high=1.0), "p_verbose": Param(0.5, float, low=0.0, high=1.0),
    "sft_steps": Param(2000, int, low=1), "sft_hidden_size": Param(96, int, low=2),
    "sft_layers": Param(2, int, low=1), "sft_heads": Param(4, int, low=1), "sft_kv_heads": Param(2, int, low=1),
    "sft_intermediate_size": Param(256, int, low=1), "sft_batch_size": Param(32, int, low=1),
    "sft_lr": Param(3e-3, float, low=0.0), "sft_warmup_steps": Param(50, int, low=0),
    # on-policy pairs
    "n_pair_prompts": Param(3000, int, low=1), "k": Param(5, int, low=2),
    "pair_temperature": Param(0.8, float, low=0.0), "max_new_tokens": Param(24, int, low=1),
    "pair_judge": Param("gold", str, choices=("gold", "proxy", "rm")),
    "proxy_length_bias": Param(0.2, float), "proxy_noise_std": Param(0.5, float, low=0.0),
    # evaluation slices of the held-out prompts
    "n_val": Param(200, int, low=1), "n_test": Param(300, int, low=1),
    # preference training
    "loss": Param("alphapo", str),
    "beta": Param(None, float, low=0.0), "gamma": Param(None, float), "alpha": Param(None, float),
    "eta": Param(None, float, low=0.0),
    "learning_rate": Param(5e-4, float, low=0.0, high=1.0), "epochs": Param(1, int, low=1),
    "batch_size": Param(32, int, low=1), "warmup_ratio": Param(0.1, float, low=0.0, high=1.0),
    "max_length": Param(128, int, low=8),
    # the learned reward model (stage toy_rm, used with pair_judge: rm)
    "rm_n_train": Param(2000, int, low=1), "rm_n_heldout": Param(400, int, low=2),
    "rm_steps": Param(300, int, low=1), "rm_hidden_size": Param(64, int, low=2),
    # responses per prompt for the loss, and online rounds (defaults: best-vs-worst pairs, one offline round)
    "train_responses": Param(2, int, low=2), "rounds": Param(1, int, low=1),
    # diagnostics (never change training)
    "probe_size": Param(None, int, low=1), "probe_steps": Param(None, int, low=1),
    "reference_kl": Param(False, bool),
    # evaluation during training: every eval_steps optimizer steps (None: the final policy only)
    "eval_steps": Param(None, int, low=1), "eval_samples": Param(4, int, low=1),
}
LOSS_PARAMS = ("beta", "gamma", "alpha", "eta")


def _torch_threads(params: dict) -> None:
    import torch

    torch.set_num_threads(max(1, int(params.get("threads", 1))))


@register_stage("toy_sft", keys=SFT_KEYS)
def sft_stage(params: dict, shared: dict, out_dir: Path) -> dict:
    from alphapo.toyworld.sft import ToySFTConfig, train_sft

    _torch_threads(params)
    cfg = ToySFTConfig(seed=params["seed"], n_train=params["n_train"], n_heldout=params["n_heldout"],
                       p_error=params["p_error"], p_verbose=params["p_verbose"], steps=params["sft_steps"],
                       hidden_size=params["sft_hidden_size"], layers=params["sft_layers"],
                       heads=params["sft_heads"], kv_heads=params["sft_kv_heads"],
                       intermediate_size=params["sft_intermediate_size"], batch_size=params["sft_batch_size"],
                       lr=params["sft_lr"], warmup_steps=params["sft_warmup_steps"], threads=params["threads"])
    summary = train_sft(cfg, Path(out_dir) / "model", progress=False)
    return {"model": str(Path(out_dir) / "model"), "final_loss": summary["final_loss"]}


def _eval_tasks(params: dict):
    from alphapo.toyworld.tasks import split_tasks

    if params["n_val"] + params["n_test"] > params["n_heldout"]:
        raise UserError(f"toy job: n_val + n_test = {params['n_val'] + params['n_test']} exceeds n_heldout = "
                        f"{params['n_heldout']}")
    if params["n_pair_prompts"] > params["n_train"]:
        raise UserError(f"toy job: n_pair_prompts = {params['n_pair_prompts']} exceeds n_train = {params['n_train']}")
    train_tasks, heldout = split_tasks(params["seed"], params["n_train"], params["n_heldout"])
    n_val, n_test = params["n_val"], params["n_test"]
    return train_tasks, {"val": heldout[:n_val], "test": heldout[n_val:n_val + n_test]}


def _greedy(model, tokenizer, prompts, params: dict) -> list[str]:
    from alphapo.generation.sampling import generate_responses

    gen = generate_responses(model, tokenizer, prompts, k=1, temperature=0.0,
                             max_new_tokens=params["max_new_tokens"], batch_size=100, seed=params["seed"] + 1,
                             progress=False)
    return [r[0] for r in gen.responses]


def _pair_judge(params: dict):
    """The judge that ranks the samples of the ``toy_pairs`` stage: gold, or the proxy judge; with
    ``pair_judge: rm`` the stage gold-scores the samples and ``toy_rm`` re-ranks them with the reward model."""
    from alphapo.toyworld import GoldJudge, ProxyJudge

    if params["pair_judge"] == "proxy":
        return ProxyJudge(noise_std=params["proxy_noise_std"], length_bias=params["proxy_length_bias"],
                          seed=params["seed"])
    return GoldJudge()


def _write_records(out: Path, ids, prompts, responses, scores) -> dict:
    """``pairs.jsonl`` (best vs worst) and ``responses.jsonl`` (all k with their scores) of judged samples;
    returns their paths and counts."""
    from alphapo.data.pairs import select_pairs
    from alphapo.io import write_jsonl_atomic

    out_paths: dict = {}
    for mode, name in (("pairs", "pairs"), ("all", "responses")):
        records, _ = select_pairs(ids, prompts, responses, scores, mode=mode)
        write_jsonl_atomic(out / f"{name}.jsonl", records)  # may be empty: the job refuses to train on that
        out_paths[name] = str(out / f"{name}.jsonl")
        out_paths[f"n_{name}"] = len(records)
    return out_paths


def write_sft_eval(policy, tokenizer, evals: dict, params: dict, path: Path) -> None:
    """The SFT policy's greedy answers to each evaluation split's prompts and their gold scores, written to
    ``path`` as ``{split: {"responses", "scores"}}``: the reference every run of the seed is judged
    against. Shared by the ``toy`` and ``toy_ra`` stages."""
    from alphapo.toyworld import GoldJudge

    gold = GoldJudge()
    sft_eval = {}
    for split, tasks in evals.items():
        prompts = [t.messages() for t in tasks]
        responses = _greedy(policy, tokenizer, prompts, params)
        sft_eval[split] = {"responses": responses, "scores": gold.score(prompts, responses)}
    Path(path).write_text(json.dumps(sft_eval), encoding="utf-8")


@register_stage("toy_pairs", keys=PAIR_KEYS)
def pairs_stage(params: dict, shared: dict, out_dir: Path) -> dict:
    from alphapo.generation.pairs import generate_pairs
    from alphapo.generation.sampling import load_policy
    from alphapo.io import write_jsonl_atomic, write_text_atomic

    _torch_threads(params)
    out = Path(out_dir)
    train_tasks, evals = _eval_tasks(params)
    tasks = train_tasks[:params["n_pair_prompts"]]
    judge = _pair_judge(params)
    policy, tokenizer = load_policy(shared["toy_sft"]["model"], device="cpu")
    ids = [f"toy-train-{i}" for i in range(len(tasks))]
    prompts = [t.messages() for t in tasks]
    gen = generate_pairs(policy, tokenizer, prompts, judge, ids=ids, k=params["k"],
                         temperature=params["pair_temperature"], max_new_tokens=params["max_new_tokens"],
                         batch_size=64, seed=params["seed"], progress=False)
    if not gen.records:
        raise UserError(f"toy job: no pairs from {len(tasks)} prompts (every prompt's samples tied); raise "
                        "n_pair_prompts or k")
    # every sample with its score (gold with pair_judge: rm): what toy_rm re-ranks, and the k-response records
    write_text_atomic(out / "samples.json", json.dumps({"ids": ids, "prompts": prompts,
                                                        "responses": gen.generation.responses,
                                                        "scores": gen.scores}))
    result = {"samples": str(out / "samples.json")}
    if params["pair_judge"] != "rm":  # with rm, nothing here is ranked by the judge the runs train on
        write_jsonl_atomic(out / "pairs.jsonl", gen.records)
        multi = _write_records(out, ids, prompts, gen.generation.responses, gen.scores)
        result.update({"pairs": str(out / "pairs.jsonl"), "responses": multi["responses"],
                       "n_responses": multi["n_responses"],
                       "reference_cache_responses": str(out / "reference_cache_responses")})
    write_sft_eval(policy, tokenizer, evals, params, out / "sft_eval.json")
    return {**result, "sft_eval": str(out / "sft_eval.json"), "reference_cache": str(out / "reference_cache"),
            "stats": {**gen.stats.to_dict(), "n_pairs": len(gen.records)}}


@register_stage("toy_rm", keys=RM_KEYS)
def rm_stage(params: dict, shared: dict, out_dir: Path) -> dict:
    """With ``pair_judge: rm``: train the toy Bradley-Terry reward model (``toyworld.reward_model``), rank the
    ``toy_pairs`` samples by its scores; otherwise nothing (``{"used": False}``)."""
    if params["pair_judge"] != "rm":
        return {"used": False}
    from alphapo.generation.hf_judge import HFRewardJudge
    from alphapo.toyworld.reward_model import RewardModelConfig, pair_accuracy, train_reward_model

    _torch_threads(params)
    out = Path(out_dir)
    cfg = RewardModelConfig(seed=params["seed"], n_train=params["rm_n_train"], n_heldout=params["rm_n_heldout"],
                            p_error=params["p_error"], p_verbose=params["p_verbose"], steps=params["rm_steps"],
                            hidden_size=params["rm_hidden_size"], threads=params["threads"])
    summary = train_reward_model(cfg, out / "model", progress=False)
    samples = json.loads(Path(shared["toy_pairs"]["samples"]).read_text(encoding="utf-8"))
    judge = HFRewardJudge(out / "model", batch_size=256, device="cpu", progress=False)
    flat_prompts = [p for p, rs in zip(samples["prompts"], samples["responses"]) for _ in rs]
    flat = judge.score(flat_prompts, [r for rs in samples["responses"] for r in rs])
    scores, i = [], 0
    for rs in samples["responses"]:
        scores.append(flat[i:i + len(rs)])
        i += len(rs)
    written = _write_records(out, samples["ids"], samples["prompts"], samples["responses"], scores)
    if not written["n_pairs"]:
        raise UserError(f"toy job: the reward model ranks no pair among {len(scores)} prompts (every prompt's "
                        "samples empty or scored the same); raise n_pair_prompts or k")
    # how often the reward model's chosen response is the gold judge's better one (ties half)
    gold = {(sid, r): g for sid, rs, gs in zip(samples["ids"], samples["responses"], samples["scores"])
            for r, g in zip(rs, gs)}
    pairs = [json.loads(line) for line in Path(written["pairs"]).read_text(encoding="utf-8").splitlines()]
    agree = pair_accuracy([gold[(p["id"], p["chosen"][0]["content"])] for p in pairs],
                          [gold[(p["id"], p["rejected"][0]["content"])] for p in pairs])
    return {"used": True, "model": str(out / "model"), **written,
            "reference_cache": str(out / "reference_cache"),
            "reference_cache_responses": str(out / "reference_cache_responses"),
            "heldout_accuracy": summary["heldout_accuracy"],
            "heldout_pearson_with_gold": summary["heldout_pearson_with_gold"],
            "pairs_gold_agreement": agree, "seconds": summary["wall_time_s"]}


def _loss_params(params: dict) -> tuple[dict, bool]:
    from alphapo.losses import get_loss

    try:
        loss = get_loss(params["loss"])
    except Exception as err:
        raise UserError(f"toy job: loss: {err}") from err
    multi = bool(getattr(loss, "multi_response", False))
    k_train = params.get("train_responses", 2)  # jobs without k-response training (toy_ra) train on pairs
    if multi and k_train == 2:
        raise UserError(f"toy job: loss {params['loss']!r} takes k responses per prompt; with train_responses: 2 "
                        "the toy job trains on pairs (set train_responses to k for k-response losses)")
    if not multi and k_train > 2:
        raise UserError(f"toy job: train_responses = {k_train} needs a k-response loss "
                        f"(rpo_multi, rpo_bwd_all_pairs, rpo_fwd_all_pairs, rpo_sqr_all_pairs, rloo); loss "
                        f"{params['loss']!r} takes pairs")
    if k_train > 2 and k_train != params["k"]:
        raise UserError(f"toy job: train_responses = {k_train} trains on all k sampled "
                        f"responses of a prompt, but k = {params['k']}; set k: {k_train}")
    accepted = inspect.signature(loss).parameters
    out = {}
    for key in LOSS_PARAMS:
        if params[key] is None:
            continue
        if key not in accepted:
            raise UserError(f"toy job: loss {params['loss']!r} takes no {key!r} (it takes "
                            f"{[k for k in accepted if k in LOSS_PARAMS]})")
        out[key] = params[key]
    requires = getattr(loss, "requires", ())
    if multi:
        return out, "ref_logps" in requires
    return out, bool(requires)


PROBE_REPORTED = ("probe/chosen_lnorm", "probe/rejected_lnorm", "probe/margin_lnorm", "probe/margin_lnorm/q1",
                  "probe/margin_lnorm/median", "probe/margin_lnorm/q3")
KL_REPORTED = ("kl/seq_k1", "kl/token_k1")


def _diagnostics(result) -> dict[str, float]:
    """The run's diagnostic metrics from a ``TrainResult``: the end-of-training probe record (and its change
    since the first probe, read from ``metrics.jsonl``) and the last logged batch's ``kl/*``, when present."""
    from alphapo.training.plotting import read_metrics

    out: dict[str, float] = {}
    end = result.probe_metrics
    if end:
        start = next(r for r in read_metrics(result.output_dir) if r.get("split") == "probe")
        out.update({k: float(end[k]) for k in PROBE_REPORTED})
        for k in ("probe/chosen_lnorm", "probe/rejected_lnorm"):
            out[f"{k}_change"] = float(end[k]) - float(start[k])
    out.update({f"train/{k.replace('/', '_')}": float(result.train_metrics[k]) for k in KL_REPORTED
                if k in result.train_metrics})
    return out


def _training_data(params: dict, shared: dict) -> tuple[str, Path]:
    """The seed's shared training records and their reference cache folder: ranked by the pair judge
    (``toy_pairs``) or by the learned reward model (``toy_rm``); best-vs-worst pairs or all k responses."""
    source = shared["toy_rm"] if params["pair_judge"] == "rm" else shared["toy_pairs"]
    if params["train_responses"] == 2:
        return source["pairs"], Path(source["reference_cache"])
    if "responses" not in source:  # a pair stage folder written before k-response records existed
        raise UserError(f"toy job: the shared pair stage {Path(source['pairs']).parent} holds no k-response "
                        "records (it was computed by an older alphapo); delete that folder to recompute it")
    if source["n_responses"] == 0:
        raise UserError(f"toy job: train_responses = {params['train_responses']}: no prompt of seed "
                        f"{params['seed']} has {params['k']} non-empty samples that do not all score the same; "
                        "raise n_pair_prompts, or use train_responses: 2")
    return source["responses"], Path(source["reference_cache_responses"])


def round_plan(n_prompts: int, rounds: int, n_records: int, epochs: int, batch_size: int) -> list[tuple[int, int, int]]:
    """``(first prompt, end prompt, optimizer steps)`` of each online round (pure function).

    Round ``r`` (from 0) takes the pair prompts ``[r * n_prompts // rounds, (r + 1) * n_prompts // rounds)``,
    so the rounds partition the offline run's prompts. The step budget is the offline run's,
    ``epochs * ceil(n_records / batch_size)`` (``n_records``: the offline records of the seed), split as
    evenly as it goes, earlier rounds taking the remainder: offline and online take the same number of
    optimizer steps of ``batch_size`` records each.
    """
    if rounds > n_prompts:
        raise UserError(f"toy job: rounds = {rounds} exceeds n_pair_prompts = {n_prompts} (each round needs a "
                        "fresh slice of the pair prompts)")
    total = epochs * -(-n_records // batch_size)
    if total < rounds:
        raise UserError(f"toy job: the offline step budget ({total} steps) is smaller than rounds = {rounds}; "
                        "raise n_pair_prompts or epochs, or lower rounds")
    return [(r * n_prompts // rounds, (r + 1) * n_prompts // rounds, total // rounds + (r < total % rounds))
            for r in range(rounds)]


def _val_win_rate(model_dir: str, params: dict, tasks, sft_val: dict) -> float:
    """Greedy responses of ``model_dir`` on the val prompts against the SFT policy's, by the gold judge
    (ties half): the ``val/win_rate`` of an intermediate policy."""
    from alphapo.generation.sampling import load_policy
    from alphapo.toyworld import GoldJudge

    model, tokenizer = load_policy(model_dir, device="cpu")
    prompts = [t.messages() for t in tasks]
    scores = GoldJudge().score(prompts, _greedy(model, tokenizer, prompts, params))
    wins = [1.0 if s > q else 0.5 if s == q else 0.0 for s, q in zip(scores, sft_val["scores"])]
    return sum(wins) / len(wins)


def _online_rounds(params: dict, shared: dict, data_path: str, config, out_dir: Path):
    """``rounds`` online rounds (see ``round_plan`` for the prompt and step split); returns the last round's
    ``TrainResult`` and the per-round metrics.

    Round 1 trains on the seed's shared records of its prompt slice (SFT samples, as offline); round r > 1
    samples ``k`` responses at ``pair_temperature`` from round r-1's policy on its slice (sampling seed
    ``seed + 1000 (r - 1)``), ranks them with the run's judge (gold, proxy, or the seed's reward model) and
    keeps pairs or all k as offline. Each round trains from the previous round's policy, with that policy
    as the reference model (SFT in round 1), a fresh AdamW and its own warmup + cosine schedule, and a
    reference cache of its own (``round<r>/reference_cache``).
    """
    from alphapo.generation.hf_judge import HFRewardJudge
    from alphapo.generation.pairs import generate_pairs
    from alphapo.generation.sampling import load_policy
    from alphapo.io import write_jsonl_atomic
    from alphapo.training import train

    records_all = [json.loads(line) for line in Path(data_path).read_text(encoding="utf-8").splitlines() if line]
    plan = round_plan(params["n_pair_prompts"], params["rounds"], len(records_all), params["epochs"],
                      params["batch_size"])
    train_tasks, evals = _eval_tasks(params)
    sft_val = json.loads(Path(shared["toy_pairs"]["sft_eval"]).read_text(encoding="utf-8"))["val"]
    judge = None
    policy_dir = shared["toy_sft"]["model"]
    metrics: dict[str, float] = {}
    total = 0
    for r, (lo, hi, steps) in enumerate(plan, 1):
        folder = out_dir / f"round{r}"
        if r == 1:
            records = [x for x in records_all if lo <= int(x["id"].rsplit("-", 1)[1]) < hi]
        else:
            if judge is None:
                judge = (HFRewardJudge(shared["toy_rm"]["model"], batch_size=256, device="cpu", progress=False)
                         if params["pair_judge"] == "rm" else _pair_judge(params))
            policy, tokenizer = load_policy(policy_dir, device="cpu")
            tasks = train_tasks[lo:hi]
            records = generate_pairs(
                policy, tokenizer, [t.messages() for t in tasks], judge,
                ids=[f"toy-train-{i}" for i in range(lo, hi)], k=params["k"],
                temperature=params["pair_temperature"], max_new_tokens=params["max_new_tokens"], batch_size=64,
                seed=params["seed"] + 1000 * (r - 1), mode="pairs" if params["train_responses"] == 2 else "all",
                progress=False).records
        if not records:
            raise UserError(f"toy job: round {r} has no training records from prompts {lo}..{hi - 1} (every "
                            "prompt's samples tied or empty); raise n_pair_prompts or k, or lower rounds")
        write_jsonl_atomic(folder / "data.jsonl", records)
        result = train(config(str(folder / "data.jsonl"), policy_dir, folder / "reference_cache", folder / "train",
                              steps))
        policy_dir = str(result.final_dir)
        total += result.global_step
        metrics.update({f"round{r}/records": float(len(records)), f"round{r}/steps": float(result.global_step)})
        if r < len(plan):
            metrics[f"round{r}/val_win_rate"] = _val_win_rate(policy_dir, params, evals["val"], sft_val)
    metrics["train/steps"] = float(total)
    return result, metrics


def evaluate_split(split: str, model, tokenizer, prompts: list, asked: list, ref: dict, params: dict,
                   metrics: dict[str, float], per_prompt: dict[str, list[float]]) -> list[str]:
    """Greedy answers of ``model`` to ``asked`` (what the model sees), graded by the gold judge on ``prompts``
    (what the task is) against the SFT policy's answers ``ref`` (``responses`` and gold ``scores``).

    Adds ``<split>/win_rate``, ``lc_win_rate``, ``gold_score``, ``correctness``, ``correctness_gain`` and
    ``length`` to ``metrics`` and the per-prompt lists ``<split>/gold_score``, ``win`` and ``correctness``
    to ``per_prompt``; returns the answers. Shared by the ``toy`` and ``toy_ra`` jobs."""
    from alphapo.evaluation.evaluate import judge_head_to_head
    from alphapo.toyworld import GoldJudge

    judge = GoldJudge()
    responses = _greedy(model, tokenizer, asked, params)
    ev = judge_head_to_head(judge, prompts, responses, ref["responses"], reference_scores=ref["scores"],
                            seed=params["seed"])
    s = ev.summary()
    correctness = [a["correctness"] for a in judge.score_attributes(prompts, responses)]
    sft_correctness = [a["correctness"] for a in judge.score_attributes(prompts, ref["responses"])]
    metrics.update({f"{split}/win_rate": s["win_rate"], f"{split}/lc_win_rate": s["lc_win_rate"],
                    f"{split}/gold_score": s["mean_score"],
                    f"{split}/correctness": sum(correctness) / len(correctness),
                    f"{split}/correctness_gain": (sum(correctness) - sum(sft_correctness)) / len(correctness),
                    f"{split}/length": sum(len(r.split()) for r in responses) / len(responses)})
    per_prompt[f"{split}/gold_score"] = list(ev.scores)
    per_prompt[f"{split}/win"] = list(ev.preferences)
    per_prompt[f"{split}/correctness"] = [float(c) for c in correctness]
    return responses


def train_config(params: dict, model: str, data: str, cache_dir: str | Path, output_dir: str | Path, *,
                 max_steps: int | None = None, probe_path: str | None = None):
    """The toy world's preference-training config: ``params``' loss and hyper-parameters (AdamW, cosine
    schedule, one global batch per step, logging every 2 steps), from policy ``model`` on the preference
    file ``data``, reference log-probs cached in ``cache_dir``. Checkpoints every ``eval_steps`` when the
    job has that parameter set; ``probe_path`` is ``diagnostics.probe_path``. Shared by the ``toy`` job
    (offline and each online round) and the ``toy_ra`` job."""
    from alphapo.training import (
        DataConfig,
        LoggingConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        ReferenceConfig,
        TrainConfig,
    )
    from alphapo.training.config import DiagnosticsConfig

    loss_params, _ = _loss_params(params)
    return TrainConfig(
        model=ModelConfig(model),
        data=DataConfig(train_path=data, max_length=params["max_length"]),
        loss=LossConfig(params["loss"], loss_params),
        reference=ReferenceConfig(cache_dir=str(cache_dir)),
        train=OptimConfig(epochs=params["epochs"], max_steps=max_steps, per_device_batch_size=params["batch_size"],
                          global_batch_size=params["batch_size"], learning_rate=params["learning_rate"],
                          warmup_ratio=params["warmup_ratio"], lr_scheduler="cosine", seed=params["seed"]),
        logging=LoggingConfig(logging_steps=2, tensorboard=False, progress_bar=False, **_checkpoints_for_eval(params)),
        diagnostics=DiagnosticsConfig(reference_kl=params["reference_kl"], probe_size=params["probe_size"],
                                      probe_steps=params["probe_steps"], probe_path=probe_path),
        output_dir=str(output_dir))


@register_job("toy", params=PARAMS, stages=("toy_sft", "toy_pairs", "toy_rm"),
              help="toy world: shared SFT and pairs per seed, train one loss, gold-judge val/test metrics")
def toy_job(params: dict, shared: dict, out_dir: Path) -> dict:
    from alphapo.experiments.runner import file_lock
    from alphapo.generation.sampling import load_policy
    from alphapo.training import train

    _torch_threads(params)
    _, needs_reference = _loss_params(params)
    needs_reference = needs_reference or params["reference_kl"]
    if params["eval_steps"] is not None and params["rounds"] > 1:
        raise UserError("toy job: eval_steps evaluates one training run's checkpoints; it cannot be combined with "
                        f"rounds = {params['rounds']} (drop one of them)")
    _, evals = _eval_tasks(params)
    pairs = shared["toy_pairs"]
    data_path, cache = _training_data(params, shared)

    def config(data: str, model: str, cache_dir: Path, output_dir: Path, max_steps: int | None):
        return train_config(params, model, data, cache_dir, output_dir, max_steps=max_steps)

    computed_reference = False
    round_metrics: dict[str, float] = {}
    if params["rounds"] == 1:  # offline: one round on the seed's shared data (today's run)
        tc = config(data_path, shared["toy_sft"]["model"], cache, Path(out_dir) / "train", None)
        if needs_reference and not any(cache.glob("*.safetensors")):
            with file_lock(cache.parent / f"{cache.name}.lock"):  # the first run of the seed fills the cache
                computed_reference = not any(cache.glob("*.safetensors"))  # not filled while we waited
                result = train(tc)
        else:
            result = train(tc)
    else:
        result, round_metrics = _online_rounds(params, shared, data_path, config, Path(out_dir))

    model, tokenizer = load_policy(result.final_dir, device="cpu")
    sft_eval = json.loads(Path(pairs["sft_eval"]).read_text(encoding="utf-8"))
    metrics: dict[str, float] = {"train/steps": float(round_metrics.pop("train/steps", result.global_step)),
                                 **round_metrics,
                                 "train/reference_computed": float(computed_reference),
                                 **_diagnostics(result)}
    per_prompt: dict[str, list[float]] = {}
    saved: dict[str, list[str]] = {}
    for split, tasks in evals.items():
        prompts = [t.messages() for t in tasks]
        saved[split] = evaluate_split(split, model, tokenizer, prompts, prompts, sft_eval[split], params, metrics,
                                      per_prompt)
    if params["rounds"] > 1:  # the last round's policy is the final one
        metrics[f"round{params['rounds']}/val_win_rate"] = metrics["val/win_rate"]
    (Path(out_dir) / "responses.json").write_text(json.dumps(saved), encoding="utf-8")
    if params["eval_steps"] is None:
        return {"metrics": metrics, "per_prompt": per_prompt}
    curve = evaluate_over_training(params, shared["toy_sft"]["model"], result.output_dir, result.final_dir,
                                   result.global_step, evals["val"], sft_eval["val"])
    metrics.update({f"val/kl_sft_{k}": curve[-1][f"kl_{k}"] for k in ("k1", "k3", "token_k1")})
    return {"metrics": metrics, "per_prompt": per_prompt, "extra": {"eval_curve": curve}}


# ------------------------------------------------------------------------- evaluation during training
def _checkpoints_for_eval(params: dict) -> dict:
    """The trainer's ``logging`` settings that keep a checkpoint every ``eval_steps`` (all of them)."""
    if params.get("eval_steps") is None:  # toy_ra has no eval_steps
        return {}
    return {"save_steps": params["eval_steps"], "save_total_limit": 1_000_000}


def _load_weights(model, checkpoint: Path) -> None:
    """The trained weights of a trainer checkpoint (``model.safetensors``: every trainable parameter)."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"))
    names = {n for n, _ in model.named_parameters()}
    if set(state) != names:
        raise UserError(f"{checkpoint}: its weights do not match the SFT policy's parameters "
                        f"(differ in {sorted(set(state) ^ names)[:3]})")
    model.load_state_dict(state, strict=False)


def evaluate_over_training(params: dict, sft_model: str | Path, train_dir: str | Path, final_dir: str | Path,
                           final_step: int, tasks, sft_val: dict) -> list[dict]:
    """Win rate against the SFT policy and sampled KL(pi || pi_SFT) at step 0, at every checkpoint the
    trainer kept in ``train_dir/checkpoints`` and at the end (``final_dir``, step ``final_step``); see
    the module docstring. Deletes the checkpoints once evaluated. One record per point, by step.

    ``sft_val``: the SFT policy's greedy ``responses`` on ``tasks`` and their gold ``scores``."""
    import shutil

    import torch

    from alphapo.evaluation.evaluate import judge_head_to_head
    from alphapo.evaluation.logprobs import completion_logps_from_text
    from alphapo.generation.sampling import generate_responses, load_policy
    from alphapo.toyworld import GoldJudge
    from alphapo.training.metrics import sampled_kl_estimates

    train_dir = Path(train_dir)
    reference, tokenizer = load_policy(sft_model, device="cpu")
    policy, _ = load_policy(sft_model, device="cpu")
    prompts = [t.messages() for t in tasks]
    judge = GoldJudge()
    steps = sorted(int(p.name.split("-")[1]) for p in (train_dir / "checkpoints").glob("step-*"))
    points = [(0, None)] + [(s, train_dir / "checkpoints" / f"step-{s:06d}") for s in steps if s < final_step]
    curve = []
    for step, ckpt in [*points, (final_step, None)]:
        if step == final_step:
            policy, _ = load_policy(final_dir, device="cpu")
        elif ckpt is not None:
            _load_weights(policy, ckpt)
        responses = _greedy(policy, tokenizer, prompts, params)
        ev = judge_head_to_head(judge, prompts, responses, sft_val["responses"], reference_scores=sft_val["scores"],
                                seed=params["seed"])
        k = params["eval_samples"]
        gen = generate_responses(policy, tokenizer, prompts, k=k, temperature=1.0,
                                 max_new_tokens=params["max_new_tokens"], batch_size=max(1, 400 // k),
                                 seed=params["seed"] + 2, progress=False)
        flat_prompts = [p for p in prompts for _ in range(k)]
        flat = [r for rs in gen.responses for r in rs]
        with torch.inference_mode():
            lp, n_tok = completion_logps_from_text(policy, tokenizer, flat_prompts, flat, batch_size=64)
            lp_ref, _ = completion_logps_from_text(reference, tokenizer, flat_prompts, flat, batch_size=64)
        kl = sampled_kl_estimates(torch.as_tensor(lp - lp_ref), float(n_tok.sum()))
        curve.append({"step": step, "win_rate": ev.summary()["win_rate"], "kl_k1": kl["k1"], "kl_k3": kl["k3"],
                      "kl_token_k1": kl["token_k1"], "n_samples": len(flat),
                      "truncated_fraction": gen.truncated_fraction})
    shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)
    return curve
