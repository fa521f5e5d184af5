"""RemoteGLM-mini model: small ResNet vision encoder -> visual tokens -> tiny Llama decoder.

Boundary: this module knows tensors only (no tokenizer, no image files). Each image becomes
`config.num_image_tokens` embeddings [global, scene-probabilities, grid_1..grid_G] that replace the `<image>`
placeholder embeddings in the prompt (the processor expands one placeholder into that many ids), LLaVA-style.
The decoder is a stock `LlamaModel`, so KV caching, padding masks and `generate()` behave like any HF LLM.

Vision features at inference are averaged over the 8 dihedral views (rotations x flip) for the global feature and
scene probabilities (remote-sensing images have no "up"); the grid tokens come from the image as given. The
dihedral average is invariant to the view, so training uses the same features whatever view is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from .configuration_remoteglm_mini import RemoteGLMMiniConfig
from .vision_remoteglm_mini import VisionEncoder, dihedral_views, head_list


class VisualProjector(nn.Module):
    """Maps (global, probs, grid) features to `num_image_tokens` decoder embeddings (B, N, d)."""

    def __init__(self, config: RemoteGLMMiniConfig, feat_dim: int):
        super().__init__()
        d = config.text_config.hidden_size
        self.feat = nn.Sequential(nn.Linear(feat_dim, d), nn.GELU(), nn.Linear(d, d))
        self.scene = nn.Linear(max(config.num_scene_classes, 1), d)
        self.slot = nn.Parameter(torch.zeros(config.num_image_tokens, d))
        if config.scene_token not in ("probs", "onehot"):
            raise ValueError(f"scene_token must be 'probs' or 'onehot', got {config.scene_token!r}")
        self.onehot = config.scene_token == "onehot"
        self.head_sizes = [len(classes) for _, classes in head_list(config.scene_heads)] or [1]

    def scene_input(self, probs: torch.Tensor) -> torch.Tensor:
        """The scene token's input: the probabilities, or per head a one-hot of its top class (a head masked to all
        zeros stays zero)."""
        if not self.onehot:
            return probs
        parts = []
        for p in probs.split(self.head_sizes, dim=-1):
            top = F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
            parts.append(top * (p.sum(-1, keepdim=True) > 0))
        return torch.cat(parts, dim=-1)

    def forward(self, pooled: torch.Tensor, probs: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        scene = self.scene(self.scene_input(probs))
        tokens = torch.cat([self.feat(pooled)[:, None], scene[:, None], self.feat(grid)], dim=1)
        return tokens + self.slot


@dataclass
class RemoteGLMMiniOutput(ModelOutput):
    """Causal-LM output plus the scene logits of the images in the batch (None without images)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    scene_logits: torch.Tensor | None = None


class RemoteGLMMiniPreTrainedModel(PreTrainedModel):
    config: RemoteGLMMiniConfig
    config_class = RemoteGLMMiniConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, VisualProjector):
            init.zeros_(module.slot)
        else:
            super()._init_weights(module)


class RemoteGLMMiniModel(RemoteGLMMiniPreTrainedModel):
    """Vision encoder + projector + Llama decoder, without the LM head."""

    def __init__(self, config: RemoteGLMMiniConfig):
        super().__init__(config)
        self.vision = VisionEncoder(config)
        self.projector = VisualProjector(config, self.vision.backbone.out_channels)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I,3,S,S) -> visual embeddings (I, N, d) and scene logits (I, K)."""
        feats = self.vision(pixel_values, tta=self.config.vision_tta and not self.training)
        probs = feats["probs"]
        if self.config.scene_token_heads:
            probs = probs * probs.new_tensor(self.config.scene_token_mask())
        return self.projector(feats["global"], probs, feats["grid"]), feats["logits"]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        """`image_embeds` (I, N, d) may be given instead of `pixel_values` (training on precomputed features)."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        scene_logits = None
        if image_embeds is None and pixel_values is not None:
            image_embeds, scene_logits = self.get_image_features(pixel_values.to(inputs_embeds.dtype))
        if image_embeds is not None and input_ids is not None:
            mask = (input_ids == self.config.image_token_id).unsqueeze(-1)
            n_tokens, n_feats = int(mask.sum()), image_embeds.shape[0] * image_embeds.shape[1]
            if n_tokens != n_feats:
                raise ValueError(f"{n_tokens} image placeholder tokens but {n_feats} image features")
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_embeds.to(inputs_embeds.dtype))
        out = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return out, scene_logits


class RemoteGLMMiniForConditionalGeneration(RemoteGLMMiniPreTrainedModel, GenerationMixin):
    """RemoteGLM-mini chat model, loadable with `AutoModelForImageTextToText` once `model_adapter.mini` is imported."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: RemoteGLMMiniConfig):
        super().__init__(config)
        self.model = RemoteGLMMiniModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        image_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> RemoteGLMMiniOutput:
        out, scene_logits = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            image_embeds=image_embeds,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return RemoteGLMMiniOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            scene_logits=scene_logits,
        )


__all__ = [
    "RemoteGLMMiniForConditionalGeneration",
    "RemoteGLMMiniModel",
    "RemoteGLMMiniPreTrainedModel",
    "dihedral_views",
]
