"""LoRA injection with peft, with sd-scripts' (`networks.lora`) semantics and kohya module names.

peft provides the layers (its LoRA Linear/Conv2d wrap the base layer and compute
`base(x) + lora_B(lora_A(x)) * scaling`), the kaiming/zero initialisation, and per-module
rank/alpha through `rank_pattern`/`alpha_pattern`. This module adds what sd-scripts does differently:

- which layers are adapted (`targets.py`) and their kohya names (from the model family);
- alpha 0/None means alpha = rank; every module keeps its own alpha (a loaded file may differ);
- `network_dropout` on the lora_down *output* (peft's lora_dropout drops the layer input);
- a multiplier (sampling strength) folded into peft's `scaling`;
- separate learning rates for UNet and text encoder, where a part at lr 0 is not trained or saved;
- max-norm regularisation (`scale_weight_norms`) and kohya-format save/load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainer.network.kohya_format import LoraFile, LoraModule, canonical_name, lora_delta
from trainer.network.load_errors import ShapeMismatch, shape_mismatch_error
from trainer.network.targets import find_lora_targets

ADAPTER = "default"
PARTS = ("text_encoder", "unet")  # sd-scripts' order of the optimizer groups
GROUP_NAMES = {"text_encoder": "textencoder", "unet": "unet"}  # sd-scripts' lr/<name> log names


class LoraRootLike(Protocol):
    prefix: str  # "lora_unet", "lora_te", ...
    module: nn.Module
    kind: str  # "unet" | "text_encoder"


class FamilyLike(Protocol):
    def lora_roots(self, comp: Any) -> list[LoraRootLike]: ...

    def kohya_module_name(self, root: LoraRootLike, module_path: str) -> str: ...


def effective_alpha(alpha: Optional[float], rank: int) -> float:
    """sd-scripts: an alpha of 0 or None means alpha = rank (scale 1)."""
    return float(alpha) if alpha else float(rank)


@dataclass
class NetworkSpec:
    rank: int = 8
    alpha: Optional[float] = 1.0
    conv_rank: Optional[int] = 0  # 0/None: no conv LoRA (Standard); > 0: LoCon
    conv_alpha: Optional[float] = 1.0
    dropout: float = 0.0  # kohya network_dropout, on the lora_down output
    rank_dropout: float = 0.0  # kohya rank_dropout: whole ranks of the lora_down output, per sample
    module_dropout: float = 0.0  # kohya module_dropout: the whole module skipped for a forward pass

    @classmethod
    def from_config(cls, cfg: Any) -> "NetworkSpec":
        return cls(rank=cfg.network_dim, alpha=cfg.network_alpha,
                   conv_rank=cfg.conv_dim if cfg.uses_conv_lora() else 0,
                   conv_alpha=cfg.conv_alpha, dropout=cfg.network_dropout, rank_dropout=cfg.rank_dropout,
                   module_dropout=cfg.module_dropout)

    @property
    def uses_conv(self) -> bool:
        return bool(self.conv_rank)

    def peft_config(self, paths: list[str], conv_paths: list[str]):
        from peft import LoraConfig

        conv_rank = self.conv_rank or self.rank
        return LoraConfig(
            r=self.rank,
            lora_alpha=effective_alpha(self.alpha, self.rank),
            target_modules=paths,
            # peft reads pattern keys as regexes matched against the module path: escape the dots.
            rank_pattern={re.escape(p): conv_rank for p in conv_paths},
            alpha_pattern={re.escape(p): effective_alpha(self.conv_alpha, conv_rank) for p in conv_paths},
            lora_dropout=0.0,  # see KohyaLoraModule: kohya's dropout acts elsewhere
            init_lora_weights=True,  # lora_A (= down) kaiming-uniform(a=sqrt 5), lora_B (= up) zeros: as kohya
            bias="none",
        )


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # network modules the file has no weights for
    unexpected: list[str] = field(default_factory=list)  # file modules the network does not have

    def __str__(self) -> str:
        text = f"loaded {len(self.loaded)} modules, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                text += f"; {label}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
        return text


class KohyaLoraModule(nn.Module):
    """The kohya view of one peft LoRA layer: `lora_down`/`lora_up` (peft's lora_A/lora_B), a kohya
    name and its own alpha. Registers only the two LoRA linears/convs, so moving or casting the
    network never touches the base weights."""

    def __init__(self, name: str, part: str, layer: nn.Module, *, aliases: Iterable[str] = (),
                 dropout: float = 0.0, rank_dropout: float = 0.0, module_dropout: float = 0.0):
        super().__init__()
        self.name = name
        self.part = part
        self.aliases = {name, *aliases}
        self.lora_down = layer.lora_A[ADAPTER]
        self.lora_up = layer.lora_B[ADAPTER]
        self._layer = (layer,)  # a tuple, not a submodule: keeps the base layer out of this tree
        self.multiplier = 1.0
        self.dropout = dropout
        if dropout > 0:
            # sd-scripts' network_dropout drops lora_down's OUTPUT (the r rank activations, rescaled by
            # 1/(1-p)). peft's lora_dropout drops the layer INPUT before lora_down, a different
            # regulariser, so it stays off and this hook on lora_A does kohya's without replacing
            # peft's forward. It follows lora_down.training, i.e. network.train() / .eval().
            self.lora_down.register_forward_hook(self._dropout_hook)
        # kohya's rank and module dropout, as hooks for the same reason: peft has neither
        self.rank_dropout, self.module_dropout = rank_dropout, module_dropout
        if rank_dropout > 0:
            self.lora_down.register_forward_hook(self._rank_dropout_hook)
        if module_dropout > 0:
            self.lora_up.register_forward_hook(self._module_dropout_hook)

    def _dropout_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return F.dropout(output, p=self.dropout, training=module.training)

    def _rank_dropout_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Each sample keeps each rank with probability 1 − p, the kept ones scaled by 1/(1 − p) (kohya
        scales the module's output instead: the same, as lora_up is linear)."""
        if not module.training:
            return output
        rank_axis = 1 if output.dim() == 4 else output.dim() - 1  # conv: (B, r, H, W); linear: (B, ..., r)
        shape = [output.shape[0]] + [1] * (output.dim() - 1)
        shape[rank_axis] = output.shape[rank_axis]
        keep = torch.rand(shape, device=output.device) > self.rank_dropout
        return output * keep.to(output.dtype) / (1.0 - self.rank_dropout)

    def _module_dropout_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """With probability p the module adds nothing in this forward pass (training only)."""
        if module.training and float(torch.rand(1)) < self.module_dropout:
            return output * 0.0
        return output

    @property
    def layer(self) -> nn.Module:
        return self._layer[0]

    @property
    def rank(self) -> int:
        return int(self.layer.r[ADAPTER])

    @property
    def alpha(self) -> float:
        return float(self.layer.lora_alpha[ADAPTER])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def set_alpha(self, alpha: float) -> None:
        self.layer.lora_alpha[ADAPTER] = alpha
        self.set_multiplier(self.multiplier)

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        self.layer.set_scale(ADAPTER, multiplier)  # scaling = multiplier * alpha / r

    def to_lora_module(self) -> LoraModule:
        copy = lambda t: t.detach().to("cpu", copy=True)  # noqa: E731
        return LoraModule(self.name, copy(self.lora_down.weight), copy(self.lora_up.weight), self.alpha)


class LoraNetwork(nn.Module):
    """All LoRA modules of a run. `.to()`, `.train()`, `.parameters()` act on the LoRA weights only."""

    def __init__(self, modules: Iterable[KohyaLoraModule], spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        self.loras = nn.ModuleDict()
        for m in modules:
            if m.name in self.loras:
                raise ValueError(f"duplicate LoRA module name {m.name}")
            self.loras[m.name] = m
        self.multiplier = 1.0
        self._untrained_parts: set[str] = set()

    @classmethod
    def inject(cls, family: FamilyLike, comp: Any, spec: NetworkSpec, *, train_unet: bool = True,
               train_text_encoder: bool = True, dtype: Optional[torch.dtype] = torch.float32) -> "LoraNetwork":
        """Add peft LoRA layers to the family's roots. A part not trained is not injected at all."""
        from peft import inject_adapter_in_model

        modules: list[KohyaLoraModule] = []
        for root in family.lora_roots(comp):
            if not (train_unet if root.kind == "unet" else train_text_encoder):
                continue
            targets = find_lora_targets(root.module, root.kind, conv=spec.uses_conv and root.kind == "unet")
            if not targets:
                continue
            config = spec.peft_config([t.path for t in targets], [t.path for t in targets if t.conv_rank])
            inject_adapter_in_model(config, root.module, adapter_name=ADAPTER)
            for t in targets:
                plain = canonical_name(f"{root.prefix}_{t.path.replace('.', '_')}")  # names in peft files
                modules.append(KohyaLoraModule(family.kohya_module_name(root, t.path), root.kind,
                                               root.module.get_submodule(t.path), aliases=[plain],
                                               dropout=spec.dropout, rank_dropout=spec.rank_dropout,
                                               module_dropout=spec.module_dropout))
        network = cls(modules, spec)
        if dtype is not None:
            network.to(dtype=dtype)
        return network

    # ---- views -------------------------------------------------------------------------------
    def modules_of(self, part: Optional[str] = None) -> list[KohyaLoraModule]:
        return [m for m in self.loras.values() if part is None or m.part == part]

    def saved_modules(self) -> list[KohyaLoraModule]:
        """Modules that are trained and therefore saved (a part at lr 0 is neither)."""
        return [m for m in self.loras.values() if m.part not in self._untrained_parts]

    # ---- training ----------------------------------------------------------------------------
    def param_groups(self, unet_lr: float, text_encoder_lr: float, *,
                     loraplus: Optional[Mapping[str, float]] = None) -> list[dict]:
        """One optimizer group per trained part; a part at lr 0 is frozen, gets no group and is not saved.
        LoRA+ (`loraplus`: part -> ratio > 0): the part's up matrices get a group of their own at lr x ratio."""
        lrs = {"unet": unet_lr, "text_encoder": text_encoder_lr}
        groups = []
        for part in PARTS:
            modules = self.modules_of(part)
            if not modules:
                continue
            trained = (lrs[part] or 0) > 0
            for m in modules:
                m.requires_grad_(trained)
            if not trained:
                self._untrained_parts.add(part)
                continue
            self._untrained_parts.discard(part)
            ratio = (loraplus or {}).get(part, 0.0)
            if ratio > 0:
                groups.append({"params": [p for m in modules for p in m.lora_down.parameters()], "lr": lrs[part],
                               "name": GROUP_NAMES[part]})
                groups.append({"params": [p for m in modules for p in m.lora_up.parameters()],
                               "lr": lrs[part] * ratio, "name": f"{GROUP_NAMES[part]}_plus"})
            else:
                groups.append({"params": [p for m in modules for p in m.parameters()], "lr": lrs[part],
                               "name": GROUP_NAMES[part]})
        return groups

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.saved_modules() for p in m.parameters() if p.requires_grad]

    def set_multiplier(self, multiplier: float) -> None:
        """Strength of the LoRA in the forward pass (1 = as trained, 0 = off)."""
        self.multiplier = multiplier
        for m in self.loras.values():
            m.set_multiplier(multiplier)

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float) -> tuple[int, float, float]:
        """sd-scripts' scale_weight_norms: where ‖ΔW‖_F (ΔW = up·down·alpha/r) exceeds max_norm, scale
        up and down each by sqrt(max_norm/‖ΔW‖). Returns (keys scaled, mean norm, max norm) after scaling.

        sd-scripts clamps the norm below at max_norm/2 first; that only changes the ratio when it is 1
        anyway (and avoids 0/0), so the rule reduces to the one above.
        """
        norms: list[float] = []
        keys_scaled = 0
        for m in self.saved_modules():
            down, up = m.lora_down.weight, m.lora_up.weight
            norm = float((lora_delta(down, up) * m.scale).norm())
            if norm > max_norm:
                factor = (max_norm / norm) ** 0.5
                down.mul_(factor)
                up.mul_(factor)
                keys_scaled += 1
                norm = max_norm
            norms.append(norm)
        if not norms:
            return 0, 0.0, 0.0
        return keys_scaled, sum(norms) / len(norms), max(norms)

    # ---- files and state ---------------------------------------------------------------------
    def to_lora_file(self, metadata: Optional[Mapping[str, str]] = None) -> LoraFile:
        return LoraFile({m.name: m.to_lora_module() for m in self.saved_modules()}, dict(metadata or {}))

    @torch.no_grad()
    def load_lora_file(self, lora: LoraFile, *, source_field: str = "network_weights",
                       source: str = "") -> LoadReport:
        """Copy a file's weights and per-module alphas into the injected modules.

        Names may be kohya or peft/diffusers style (see kohya_format.parse_key). A module whose shape
        differs (another rank) raises TrainingError before anything is changed; it names
        `source_field` (network_weights, or resume for a saved state) and `source`, the file or folder.
        """
        by_alias = {alias: m for m in self.loras.values() for alias in m.aliases}
        report, pairs, mismatched = LoadReport(), [], []
        for name, src in lora.modules.items():
            dst = by_alias.get(name)
            if dst is None:
                report.unexpected.append(name)
            elif src.down.shape != dst.lora_down.weight.shape or src.up.shape != dst.lora_up.weight.shape:
                mismatched.append(ShapeMismatch.of(name, src, dst))
            else:
                pairs.append((src, dst))
        if mismatched:
            raise shape_mismatch_error(mismatched, source_field, source)
        for src, dst in pairs:
            dst.lora_down.weight.copy_(src.down)
            dst.lora_up.weight.copy_(src.up)
            dst.set_alpha(src.effective_alpha)
            report.loaded.append(dst.name)
        loaded = set(report.loaded)
        report.missing = [n for n in self.loras if n not in loaded]
        return report

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The saved modules' tensors under kohya keys (fp32, CPU), for resumable training state."""
        return self.to_lora_file().state_dict()

    def load_trainable_state(self, state: Mapping[str, torch.Tensor], *, source: str = "") -> None:
        """Restore the weights of a saved training state (`source`: its folder, the Resume field)."""
        from trainer.errors import TrainingError

        report = self.load_lora_file(LoraFile.from_state_dict(state), source_field="resume", source=source)
        expected = {m.name for m in self.saved_modules()}
        if report.unexpected or expected - set(report.loaded):
            raise TrainingError("resume_state_mismatch",
                                f"The saved training state does not match this network ({report}).",
                                field="resume",
                                hint="Resume with the same LoRA type, ranks and trained parts as the saved run.")
