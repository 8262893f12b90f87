"""AlphaPO's gradient analysis (paper section 3.3, appendices A.1-A.5, Figures 1 and 6) as code.

- ``gradient_terms(alpha, *, beta, gamma, logp_w, logp_l, len_w, len_l, dpi_w=1, dpi_l=1)``: ``T1``,
  ``T2``, ``|dl/dv|`` (eqs. 6-8), stable in log space and continuous at ``alpha = 0``.
- ``alpha_zero(...)``: Corollary 3.3 (eq. 10, with the paper's inverted gradient ratio corrected);
  ``preferred_likelihood_increases``: Theorem 3.2 (eq. 9).
- ``reward`` (eq. 3), ``reward_derivative`` (eq. 5), and Lemma A.1 (``lemma_a1_predicts_decreasing``
  versus the numerical ``reward_derivative_is_decreasing``).
- ``figures``: data and PNGs for the paper's Figure 1 (reward shapes) and Figure 6 (gradient surface).

Command line: ``alphapo analyze gradient|shapes|surface`` (``alphapo.analysis.cli``).
"""

from alphapo.analysis.gradient import *  # noqa: F403  (the public API is gradient.py's __all__)
from alphapo.analysis.gradient import __all__  # noqa: F401
