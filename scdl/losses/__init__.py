"""Host losses of GA-CPS (METHOD.md §2): GA-Dice, GA-CE, the CPS loss with its ramp, the supervised loss."""

from scdl.losses.cps import cps_loss, cps_weight
from scdl.losses.ga_ce import GACELoss, ga_ce_loss
from scdl.losses.ga_dice import GADiceLoss, ga_dice_loss
from scdl.losses.supervised import supervised_loss

__all__ = ["GACELoss", "GADiceLoss", "cps_loss", "cps_weight", "ga_ce_loss", "ga_dice_loss", "supervised_loss"]
