"""The EGD paper's temporal model (Karargyris et al. 2021): the image plus the fixations in reading order.

Architecture (the EGD repository's ``EyegazeModel(model_type="temporal")``, REFERENCES section 2):

- image branch: one small CNN (the repository's ``XRayNet``: conv 7x7/2 with 64 filters, ReLU,
  BatchNorm, max-pool 3/2, flatten, Linear -> ``dense_hidden`` with ReLU and BatchNorm1d,
  dropout, Linear -> ``embed_dim``) on the preprocessed image;
- heatmap branch: the same CNN design (its own weights) applied to every fixation frame, a
  Gaussian blob at one fixation (one frame per fixation, in reading order) -> a sequence of
  embeddings -> a bidirectional LSTM (``lstm_hidden`` units in all, half per direction) ->
  scaled dot-product attention whose query is the final hidden state of both directions and
  whose keys and values are the LSTM outputs -> Linear -> ``embed_dim``;
- classifier: Linear on the concatenated image and heatmap embeddings -> class logits.

The frames are an extra input: ``forward(x, frames, frame_mask)`` with frames [B, T, 1, h, w]
padded to the longest sequence and ``frame_mask`` [B, T] (True = a real fixation).  The
adapter's ``extra_inputs`` builds them from ``batch.fixations`` (``frames_from_batch``).
Padding never matters: only real frames go through the frame CNN (so padded frames do not
touch the BatchNorm statistics either), real frames are moved to the front of each sequence
(their order kept), the LSTM runs on packed sequences of each row's own length, and the
attention gives padded steps a weight of exactly 0.  A row without any fixation gets a zero
attention context (the heatmap embedding is then the Linear's bias) and finite logits.

Departures from the repository, each for a reason:

- Frames are ``frame_size`` x ``frame_size`` (default 32) single-channel Gaussians with peak 1,
  sigma ``frame_sigma`` x the grid side (0.05, about EGD's 150 px on a ~3000 px image), built on
  the fly; theirs were 224 px viridis PNGs read back as grey, repeated to 3 channels and
  ImageNet-normalised (a fixed affine change that the first convolution absorbs up to border
  effects).  At 224 px one frame CNN's flattened map has 200,704 values per frame; at 32, 4,096.
- At most ``max_frames`` fixations per image (None: all, as in the paper): the longest ones,
  kept in reading order, so that a long reading costs bounded memory.
- Padding is masked (see above); their loader zero-padded the sequences and ran the LSTM and the
  attention over the padding too, so their outputs depended on batch neighbours.
- The attention query is [forward, backward] final states, in the same order as the LSTM outputs
  it is compared with; theirs concatenated [backward, forward].  The scale is theirs,
  1 / sqrt(lstm_hidden / 2).
- Dropout is not in-place (Captum hooks see the tensors); every ReLU of the image branch is
  its own module (DeepLift needs one per use), and the frame CNN's are functional (see
  ``FrameCNN``: nothing is attributed through the frames).

Training loss: BCE with logits against the label vectors, NaN labels left out
(``losses.classification_loss``, on the image and the frames).  Grad-CAM (``cam_layer``) uses the image branch's last spatial map (after the
max-pool, stride 4).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models.adapters import network_adapter
from gazebench.models.base import ModelAdapter
from gazebench.models.egd_encoder import DEFAULT_CLASSES
from gazebench.models.fixation_frames import gaussian_profiles, padded_fixations
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "temporal_gaze"
CONV_CHANNELS = 64  # XRayNet's single convolution
MIN_INPUT_SIZE = 8


# --- fixation frames -------------------------------------------------------------------------


def fixation_frames(
    fixations: list[torch.Tensor],
    grid: int,
    device: torch.device | str,
    frame_size: int = 32,
    frame_sigma: float = 0.05,
    max_frames: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame per fixation: frames [B, T, 1, frame_size, frame_size] and mask [B, T].

    Frame t of row b is a Gaussian of peak 1 (sigma = ``frame_sigma`` x the grid side) at the
    row's t-th fixation (grid coordinates); padded frames are all zero.  Separable, so the whole
    batch is two outer products, not one 2-D exponential per fixation.
    """
    padded, mask = padded_fixations(fixations, device, max_frames)
    sigma = frame_sigma * grid
    along_x = gaussian_profiles(padded[..., 0], grid, frame_size, sigma)  # [B, T, w]
    along_y = gaussian_profiles(padded[..., 1], grid, frame_size, sigma)  # [B, T, h]
    frames = along_y[..., :, None] * along_x[..., None, :] * mask[..., None, None]
    return frames[:, :, None], mask


def frames_from_batch(
    batch: Batch, frame_size: int = 32, frame_sigma: float = 0.05, max_frames: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's extra inputs (frames, mask) for ``batch``, on ``batch.images``' device (the adapter's ``extra_inputs``)."""
    grid = batch.images.shape[-1]
    return fixation_frames(batch.fixations, grid, batch.images.device, frame_size, frame_sigma, max_frames)


# --- the network -----------------------------------------------------------------------------


def pooled_side(size: int) -> int:
    """Side of the map after conv 7x7 / stride 2 / padding 3 and max-pool 3 / stride 2 / padding 1."""
    after_conv = (size + 2 * 3 - 7) // 2 + 1
    return (after_conv + 2 * 1 - 3) // 2 + 1


class XRayNet(nn.Module):
    """The repository's small CNN, for the image: [B, 3, S, S] -> embeddings [B, embed_dim].

    Their ``forward`` applied a ReLU after every dense layer, BatchNorm1d included, so the
    dense block is Linear, ReLU, BatchNorm1d, ReLU (kept as it was).
    """

    def __init__(self, in_channels: int, input_size: int, dense_hidden: int, embed_dim: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, CONV_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False),
            nn.ReLU(),
            nn.BatchNorm2d(CONV_CHANNELS),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CONV_CHANNELS * pooled_side(input_size) ** 2, dense_hidden),
            nn.ReLU(),
            nn.BatchNorm1d(dense_hidden, momentum=0.01),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense_hidden, embed_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x))


class FrameCNN(nn.Module):
    """The same CNN design for the fixation frames: [K, 1, h, w] -> [K, embed_dim].

    Its nonlinearities are functional on purpose.  The frames are held fixed when a method
    explains the image, so nothing is attributed through this branch; but Captum's DeepLift
    hooks every nonlinear *module* of the model and fails on one whose input does not require
    grad.  Functional calls are invisible to it (and need no rule here).
    """

    def __init__(self, frame_size: int, dense_hidden: int, embed_dim: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(1, CONV_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv_norm = nn.BatchNorm2d(CONV_CHANNELS)
        self.hidden = nn.Linear(CONV_CHANNELS * pooled_side(frame_size) ** 2, dense_hidden)
        self.hidden_norm = nn.BatchNorm1d(dense_hidden, momentum=0.01)
        self.out = nn.Linear(dense_hidden, embed_dim)
        self.dropout = dropout

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv_norm(F.relu(self.conv(frames))), kernel_size=3, stride=2, padding=1)
        x = F.relu(self.hidden_norm(F.relu(self.hidden(x.flatten(1)))))
        return self.out(F.dropout(x, self.dropout, self.training))


class FrameSequenceEncoder(nn.Module):
    """Frame embeddings [B, T, E] + mask [B, T] -> one attention-pooled embedding [B, out_dim]."""

    def __init__(self, embed_dim: int, lstm_hidden: int, out_dim: int):
        super().__init__()
        if lstm_hidden % 2:
            raise UserError(f"{NAME}: lstm_hidden must be even (it is split between the two directions), got {lstm_hidden}")
        per_direction = lstm_hidden // 2
        self.rnn = nn.LSTM(embed_dim, per_direction, num_layers=1, batch_first=True, bidirectional=True)
        self.scale = 1.0 / math.sqrt(per_direction)
        self.dense = nn.Linear(lstm_hidden, out_dim)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1)
        packed = pack_padded_sequence(embeddings, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        outputs, (hidden, _) = self.rnn(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=embeddings.shape[1])
        query = torch.cat([hidden[-2], hidden[-1]], dim=1)  # final forward and backward states
        return self.dense(masked_attention(query, outputs, mask, self.scale))


def masked_attention(query: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled dot-product attention of query [B, D] over values [B, T, D], padded steps weighted 0.

    Padded energies are set to the dtype's lowest finite value, not -inf, so that a row with no
    real step gets a uniform (then zeroed) softmax, never 0/0: its context, and its gradients,
    are exactly zero rather than NaN.
    """
    energy = torch.einsum("btd,bd->bt", values, query) * scale
    energy = energy.masked_fill(~mask, torch.finfo(energy.dtype).min)
    weights = energy.softmax(dim=1) * mask
    return torch.einsum("bt,btd->bd", weights, values)


class TemporalGaze(nn.Module):
    """Image + fixation frames -> class logits (see the module docstring)."""

    def __init__(
        self,
        n_classes: int = len(DEFAULT_CLASSES),
        input_size: int = 224,
        frame_size: int = 32,
        embed_dim: int = 64,
        dense_hidden: int = 128,
        lstm_hidden: int = 128,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.image_branch = XRayNet(3, input_size, dense_hidden, embed_dim, dropout)
        self.frame_cnn = FrameCNN(frame_size, dense_hidden, embed_dim, dropout)
        self.sequence = FrameSequenceEncoder(embed_dim, lstm_hidden, embed_dim)
        self.classifier = nn.Linear(2 * embed_dim, n_classes)
        self.embed_dim = embed_dim

    @property
    def cam_layer(self) -> nn.Module:
        """The image branch's last spatial map (after the max-pool: 64 channels, stride 4)."""
        return self.image_branch.features

    def forward(self, x: torch.Tensor, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Preprocessed image [B, 3, S, S], frames [B, T, 1, h, w], mask [B, T] bool -> logits [B, C]."""
        frame_mask = frame_mask.bool()
        embeddings = self.embed_frames(frames, frame_mask)
        # real frames first, their order kept: the LSTM sees each row's own sequence, wherever the padding was
        order = (~frame_mask).to(torch.uint8).argsort(dim=1, stable=True)
        embeddings = embeddings.gather(1, order[..., None].expand_as(embeddings))
        frame_mask = frame_mask.gather(1, order)
        heatmap_embedding = self.sequence(embeddings, frame_mask)
        return self.classifier(torch.cat([self.image_branch(x), heatmap_embedding], dim=1))

    def embed_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Frame CNN on the real frames only -> [B, T, E] (zeros at padded steps)."""
        batch, steps = mask.shape
        real = frames[mask]
        embedded = self.frame_cnn(real) if len(real) else frames.new_zeros(0, self.embed_dim)
        out = embedded.new_zeros(batch, steps, embedded.shape[-1])
        return out.index_put(mask.nonzero(as_tuple=True), embedded)


# --- adapter and recipes ---------------------------------------------------------------------


def build_adapter(
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    input_size: int = 224,
    frame_size: int = 32,
    frame_sigma: float = 0.05,
    max_frames: int | None = None,
    embed_dim: int = 64,
    dense_hidden: int = 128,
    lstm_hidden: int = 128,
    dropout: float = 0.5,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``temporal_gaze`` adapter (fresh random weights, or ``state_dict``) whose ``extra_inputs`` builds the frames."""
    for name, value in (("input_size", input_size), ("frame_size", frame_size)):
        if value < MIN_INPUT_SIZE:
            raise UserError(f"{NAME}: {name} must be at least {MIN_INPUT_SIZE}, got {value}")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"{NAME}: max_frames must be a positive number of fixations or null (all), got {max_frames}")
    if frame_sigma <= 0:
        raise UserError(f"{NAME}: frame_sigma must be positive (a fraction of the grid side), got {frame_sigma}")
    network = TemporalGaze(len(class_names), input_size, frame_size, embed_dim, dense_hidden, lstm_hidden, dropout)
    config = {
        "input_size": input_size, "frame_size": frame_size, "frame_sigma": frame_sigma, "max_frames": max_frames,
        "embed_dim": embed_dim, "dense_hidden": dense_hidden, "lstm_hidden": lstm_hidden, "dropout": dropout,
    }
    frames = partial(frames_from_batch, frame_size=frame_size, frame_sigma=frame_sigma, max_frames=max_frames)
    return network_adapter(network, NAME, class_names, config, state_dict, extra_inputs=frames)


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # gazebench/resources/recipes/<NAME>.yaml: embedded on synth, paper on real data


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=classification_loss,  # class BCE with logits on the image and frames, NaN labels left out
        description="EGD temporal model (Karargyris et al. 2021): image CNN + per-fixation frame CNN -> BiLSTM -> attention",
    )
)
