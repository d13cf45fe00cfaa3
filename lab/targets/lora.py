"""LoRA fine-tuning of a target's UNet with peft (Hu et al. 2022), as diffusers' LoRA training scripts do.

    W' = W + (alpha / r) * B A,    A in R^{r x k}, B in R^{d x r};   only A and B are trained

The base weights are frozen; `add_adapter` (diffusers' peft integration) injects the adapters into
the named modules. Exports merge them (`fuse_lora`, then `unload_lora`), so a plain diffusers
pipeline loads the fine-tuned model without peft.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from lab.errors import LabError, check_number


@dataclass
class LoRA:
    """LoRA adapters on a UNet.

    Args:
        rank: r, the adapters' rank.
        alpha: the scale numerator (the update is alpha / r * B A); diffusers' scripts set alpha = r.
        target_modules: module names to adapt: the attention projections by default (as
            diffusers' train_text_to_image_lora.py); convolutions ("conv1", "conv2") work too.
    """

    rank: int = 4
    alpha: float = 4.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])

    def attach(self, unet) -> None:
        """Freeze `unet` and add trainable adapters (B = 0 at the start: the model is unchanged)."""
        from peft import LoraConfig

        if not hasattr(unet, "add_adapter"):
            raise LabError(
                f"model.lora: diffusers' {type(unet).__name__} takes no adapters "
                "(LoRA works on the UNet2DConditionModel of text-to-image targets); "
                "fine-tune it fully instead (model.pretrained without lora)"
            )
        check_number("lora.rank", self.rank, minimum=1, integer=True)
        check_number("lora.alpha", self.alpha, above=0)
        unet.requires_grad_(False)
        try:
            unet.add_adapter(
                LoraConfig(
                    r=self.rank,
                    lora_alpha=self.alpha,
                    init_lora_weights="gaussian",
                    target_modules=list(self.target_modules),
                )
            )
        except ValueError as e:  # peft: no module matched
            raise LabError(f"lora.target_modules {list(self.target_modules)}: {str(e).splitlines()[0]}") from None


def merged(unet):
    """A copy of `unet` with its LoRA adapters merged into the weights and removed."""
    out = copy.deepcopy(unet)
    out.fuse_lora()
    out.unload_lora()
    return out
