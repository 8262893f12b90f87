"""alphapo: direct preference alignment, composable and measurable.

Three research lines in one toolkit:

- AlphaPO (reward shape matters): ``alphapo.losses`` (the loss family as pure functions built from
  reward shapes x pairwise links) and ``alphapo.analysis`` (the paper's gradient analysis as code).
- RPO (reward-aware preference optimisation): ``rpo_bwd``, ``rpo_fwd``, ``rpo_sqr``, ``rpo_multi``,
  the all-pairs form and ``rloo`` in ``alphapo.losses``.
- Reward-augmented data: ``alphapo.data.relabel``.

Around them: data loading and validation (``alphapo.data``), an accelerate trainer with
likelihood-displacement diagnostics (``alphapo.training``), judges and on-policy pair generation
(``alphapo.generation``), evaluation (``alphapo.evaluation``) and a CPU-sized toy world with a gold judge
(``alphapo.toyworld``). The command line is ``alphapo`` (``alphapo.cli``).
"""

__version__ = "0.1.0"
