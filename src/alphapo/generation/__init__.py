"""On-policy sampling and judges: turn a policy + a judge into a preference dataset.

Public API (stable; the toy world and the quickstart build on it):

Judges (``alphapo.generation.judges``: protocols and adapters)
    ``Judge`` / ``PairwiseJudge`` Protocols; ``LengthJudge``, ``FunctionJudge(fn)``,
    ``NoisyJudge(judge, std, seed=)``, ``LengthBiasedJudge(judge, bias)``, ``BradleyTerryPairwise(judge)``,
    ``symmetric_compare``, ``pairwise_scores``, ``score_candidates``.
    ``HFRewardJudge(path)`` (a local HF reward model, ``alphapo.generation.hf_judge``).
    Spec registry (``alphapo.generation.judge_registry``): ``register_judge(prefix, factory)``,
    ``make_judge(spec)``, ``available_judges()``.
Sampling (``alphapo.generation.sampling``)
    ``load_policy(path) -> (model, tokenizer)``; ``generate_responses(model, tokenizer, prompts, k=,
    temperature=, max_new_tokens=, batch_size=, seed=) -> GenerationResult`` (``.responses[prompt][j]``,
    ``.num_tokens``, ``.finished``, ``.samples_per_second``).
Pairs (``alphapo.generation.pairs``)
    ``select_pairs(ids, prompts, responses, scores, mode="pairs"|"all") -> (records, PairingStats)``
    (pure pairing rule: best vs worst, all-equal prompts dropped and counted);
    ``generate_pairs(model, tokenizer, prompts, judge, k=5, temperature=0.8, ...) -> PairGenerationResult``.
Prompt files (``alphapo.generation.io``)
    ``read_prompts(path) -> (ids, prompts)``. Outputs are written with ``alphapo.io``.

Command line: ``alphapo generate --model DIR --prompts FILE --judge SPEC --k 5 --temperature 0.8 --out
FILE`` (see ``alphapo generate --help``). Judge specs: ``hf:PATH``, ``length``, ``py:MODULE:ATTR`` and
what the command line registers besides (the toy world's ``toy-gold``, ...); ``--judge-noise`` and
``--judge-length-bias`` wrap any of them into a proxy judge.

Prompts are chat conversations (lists of ``{"role", "content"}``), responses are strings.
"""

from alphapo.generation.hf_judge import HFRewardJudge
from alphapo.generation.judge_registry import available_judges, make_judge, register_judge
from alphapo.generation.judges import (
    BradleyTerryPairwise,
    FunctionJudge,
    Judge,
    LengthBiasedJudge,
    LengthJudge,
    NoisyJudge,
    PairwiseJudge,
    pairwise_scores,
    score_candidates,
    symmetric_compare,
)
from alphapo.generation.pairs import PairGenerationResult, PairingStats, generate_pairs, select_pairs
from alphapo.generation.sampling import GenerationResult, generate_responses, load_policy

__all__ = [
    "BradleyTerryPairwise", "FunctionJudge", "HFRewardJudge", "Judge", "LengthBiasedJudge", "LengthJudge",
    "NoisyJudge", "PairwiseJudge", "available_judges", "make_judge", "pairwise_scores", "register_judge",
    "score_candidates", "symmetric_compare", "PairGenerationResult", "PairingStats", "generate_pairs",
    "select_pairs", "GenerationResult", "generate_responses", "load_policy",
]
