"""gpt2: OpenAI's GPT-2, as tinygpt with GPT-2's config and Hugging Face's parameter names.

tinygpt is GPT-2 shaped already, so `GPT2` is a `TinyGPT` whose config
(gpt2_config.py) sets the MLP width, the layer norm epsilon and the tanh
GELU; the forward, the paged step and training are tinygpt's.

What is GPT-2's own is how its weights are named and laid out in a Hugging
Face folder (`hf_names`): `transformer.wte`, `transformer.wpe`,
`transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`,
`transformer.ln_f` and, untied only, `lm_head`. Its linear layers are
Conv1D layers, whose weight is stored [in, out], the transpose of a
`nn.Linear`'s. Older files (the original `gpt2` upload) drop the
`transformer.` prefix, and some hold the attention mask buffers
`attn.bias` / `attn.masked_bias`; `load_hf` accepts both and skips those.
"""

import re

from .gpt2_config import GPT2Config
from .hf_weights import HFParams
from .tinygpt import TinyGPT

__all__ = ["GPT2", "GPT2Config"]

MASK_BUFFER = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")
"""Names of the attention mask buffers some GPT-2 files hold (not parameters)."""


class GPT2(TinyGPT, HFParams):
    """The GPT-2 decoder-only transformer (tinygpt with GPT-2's config, loadable from Hugging Face weights)."""

    hf_embedding = "transformer.wte.weight"

    def hf_name(self, name: str) -> str | None:
        """The canonical name of `name`: `transformer.` prefixed; None for the attention mask buffers."""
        if MASK_BUFFER.match(name):
            return None
        if name.startswith(("h.", "wte.", "wpe.", "ln_f.")):
            return "transformer." + name
        return name

    def hf_names(self) -> dict[str, tuple[str, bool]]:
        """Hugging Face parameter name -> (this module's parameter name, transposed?); see `HFParams`."""
        names = {
            "transformer.wte.weight": ("tok_emb.weight", False),
            "transformer.wpe.weight": ("pos_emb.weight", False),
            "transformer.ln_f.weight": ("ln_f.weight", False),
            "transformer.ln_f.bias": ("ln_f.bias", False),
        }
        if self.head is not None:
            names["lm_head.weight"] = ("head.weight", False)
        pieces = {"ln_1": "ln1", "attn.c_attn": "qkv", "attn.c_proj": "proj", "ln_2": "ln2"}
        pieces |= {"mlp.c_fc": "fc", "mlp.c_proj": "fc_out"}
        for i in range(self.config.n_layers):
            for theirs, ours in pieces.items():
                conv = not theirs.startswith("ln")  # Conv1D: weight stored [in, out]
                names[f"transformer.h.{i}.{theirs}.weight"] = (f"blocks.{i}.{ours}.weight", conv)
                names[f"transformer.h.{i}.{theirs}.bias"] = (f"blocks.{i}.{ours}.bias", False)
        return names
