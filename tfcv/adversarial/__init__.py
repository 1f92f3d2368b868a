"""Adversarial examples that fool an ensemble (Elsayed et al. 2018).

Library part of arXiv:1802.08195: coarse classes from fine logits
(Appendix C), the ensemble objective (Appendix D, Eqs. 8-9), the
iterative targeted attack (Eq. 7) and the experiment's conditions image,
adv, flip and false (§3.2.2).
"""

from tfcv.adversarial.attack import ADV_CONFIG
from tfcv.adversarial.attack import FALSE_CONFIG
from tfcv.adversarial.attack import VALUE_RANGE
from tfcv.adversarial.attack import AttackConfig
from tfcv.adversarial.attack import AttackResult
from tfcv.adversarial.attack import rescale_intensity
from tfcv.adversarial.attack import targeted_attack
from tfcv.adversarial.coarse import coarse_log_probabilities
from tfcv.adversarial.coarse import coarse_logits
from tfcv.adversarial.coarse import group_membership
from tfcv.adversarial.coarse import target_coarse_logits
from tfcv.adversarial.coarse import validate_groups
from tfcv.adversarial.conditions import adv_condition
from tfcv.adversarial.conditions import false_condition
from tfcv.adversarial.conditions import flip_condition
from tfcv.adversarial.conditions import image_condition
from tfcv.adversarial.ensemble import Ensemble
from tfcv.adversarial.ensemble import Member
from tfcv.adversarial.ensemble import coarse_ensemble_loss
from tfcv.adversarial.ensemble import fine_ensemble_loss
from tfcv.adversarial.ensemble import inception_preprocess

__all__ = [
    "ADV_CONFIG",
    "FALSE_CONFIG",
    "VALUE_RANGE",
    "AttackConfig",
    "AttackResult",
    "Ensemble",
    "Member",
    "adv_condition",
    "coarse_ensemble_loss",
    "coarse_log_probabilities",
    "coarse_logits",
    "false_condition",
    "fine_ensemble_loss",
    "flip_condition",
    "group_membership",
    "image_condition",
    "inception_preprocess",
    "rescale_intensity",
    "target_coarse_logits",
    "targeted_attack",
    "validate_groups",
]
