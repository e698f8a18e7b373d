"""Train the tiny offline "shapes" CLIP (an openai/CLIP `clip.model.CLIP`) on generated coloured shapes.

Usage: python scripts/train_shapes_clip.py [--out PATH] [--steps N] [--seed S]

Captions come in five languages (en, de, pt, ru, ar; `textimg_helpers/languages.py`): every step pairs
the images with one caption per class in each language. Writes an fp16 state dict loadable with
`clip.load(path, jit=False, device="cpu")`, then evaluates text-to-image retrieval per language on
freshly generated images (other seeds).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no busy-waiting threads: much faster on a shared 2-core CPU
import torch  # noqa: E402
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
import clip  # noqa: E402
from clip.model import CLIP  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from textimg_helpers.languages import LANGS, LANGUAGES, captions, query_for  # noqa: E402
from textimg_helpers.shapes import (  # noqa: E402
    CLASS_NAMES, TRAIN_SEED, _image_rng, draw_shape, generate_shapes, label_from_filename,
)

DEFAULT_OUT = ROOT / "textimg_helpers" / "assets" / "shapes_clip.pt"
ARCH = dict(  # ModifiedResNet vision tower (learns shapes far faster than a ViT on a CPU budget)
    embed_dim=128, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None,
    context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=3,
)
TRAIN_PER_CLASS = 150
IMAGES_PER_CLASS_PER_STEP = 3
LR, WEIGHT_DECAY, WARMUP = 1e-3, 0.05, 60
MAX_FILE_BYTES = 12_000_000
EVAL_SEED, EVAL_PER_CLASS = 2024, 10
SANITY_SEED, SANITY_PER_CLASS = 7, 12


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random and restrict torch to 2 threads."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)


def build_dataset(seed: int, per_class: int, preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw per_class images of every class, preprocess them and stack into (images, labels)."""
    images, labels = [], []
    for class_index, label in enumerate(CLASS_NAMES):
        colour, shape = label.split("_")
        for index in range(per_class):
            image = draw_shape(colour, shape, _image_rng(seed, class_index, index))
            images.append(preprocess(image))
            labels.append(class_index)
    return torch.stack(images), torch.tensor(labels)


def tokenize_captions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize every caption of every (language, class), trimmed to the longest; return the tokens
    and, per (language, class), the index of its first caption and how many it has."""
    texts, first, count = [], torch.zeros(len(LANGS), len(CLASS_NAMES), dtype=torch.long), None
    count = torch.zeros_like(first)
    for i, lang in enumerate(LANGS):
        for j, label in enumerate(CLASS_NAMES):
            found = captions(label, lang)
            first[i, j], count[i, j] = len(texts), len(found)
            texts += found
    tokens = clip.tokenize(texts)
    used = int((tokens != 0).sum(dim=1).max())
    return tokens[:, :used], first, count


def sample_captions(first: torch.Tensor, count: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Indices of one random caption per (language, class), shape (languages, classes)."""
    return first + (torch.rand(first.shape, generator=gen) * count).long()


def sample_batch(labels: torch.Tensor, per_class: int, gen: torch.Generator) -> torch.Tensor:
    """Return dataset indices of a class-balanced batch (per_class images of every class)."""
    picks = []
    for class_index in range(len(CLASS_NAMES)):
        members = torch.nonzero(labels == class_index).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply label-preserving random flips and 90 degree rotations to a batch."""
    if torch.rand(1, generator=gen).item() < 0.5:
        images = images.flip(-1)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    return torch.rot90(images, k, dims=(-2, -1))


def clip_loss(model: CLIP, images: torch.Tensor, labels: torch.Tensor, texts: torch.Tensor) -> tuple:
    """Return the symmetric (image->class text, text->its images) loss, averaged over the languages,
    and the batch accuracy. ``texts``: (languages, classes, ctx) tokens, one caption per class."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(texts.flatten(0, 1)), dim=-1).view(*texts.shape[:2], -1)
    targets = F.one_hot(labels, len(CLASS_NAMES)).t().float()
    losses, correct = [], 0.0
    for lang_txt in txt:
        logits = model.logit_scale.exp().clamp(max=100) * img @ lang_txt.t()
        loss_i2t = F.cross_entropy(logits, labels)
        loss_t2i = F.cross_entropy(logits.t(), targets / targets.sum(dim=1, keepdim=True))
        losses.append((loss_i2t + loss_t2i) / 2)
        correct += (logits.argmax(dim=1) == labels).float().mean().item()
    return torch.stack(losses).mean(), correct / len(txt)


def make_optimizer(model: CLIP) -> torch.optim.Optimizer:
    """Return AdamW with weight decay on matrices only (not on embeddings, norms, biases)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        is_matrix = param.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step: int, steps: int) -> float:
    """Return the linear-warmup then cosine-decay learning rate of a step."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * 0.5 * (1 + math.cos(math.pi * progress))


def train(model: CLIP, steps: int, seed: int) -> None:
    """Train the model in place for a number of steps, printing progress."""
    start = time.time()
    images, labels = build_dataset(seed, TRAIN_PER_CLASS, clip.clip._transform(64))
    tokens, first, count = tokenize_captions()
    print(f"dataset {tuple(images.shape)}, {len(tokens)} captions of up to {tokens.shape[1]} tokens "
          f"built in {time.time() - start:.1f}s", flush=True)
    optimizer, gen = make_optimizer(model), torch.Generator().manual_seed(seed)
    model.to(memory_format=torch.channels_last).train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps)
        batch = sample_batch(labels, IMAGES_PER_CLASS_PER_STEP, gen)
        texts = tokens[sample_captions(first, count, gen)]
        loss, accuracy = clip_loss(model, augment(images[batch], gen).contiguous(memory_format=torch.channels_last), labels[batch], texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:5d}/{steps}  loss {loss.item():.4f}  acc {accuracy:.3f}  "
                  f"scale {model.logit_scale.exp().item():.1f}  elapsed {time.time() - start:.0f}s", flush=True)


def save_fp16(model: CLIP, out: Path) -> None:
    """Save the state dict in fp16 (like openai's checkpoints) and check the file size."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    size = out.stat().st_size
    print(f"saved {out} ({size / 1e6:.2f} MB)", flush=True)
    assert size <= MAX_FILE_BYTES, f"model file too large: {size} bytes"


@torch.no_grad()
def embed_folder(model: CLIP, preprocess, paths: list[Path]) -> tuple[torch.Tensor, list[str]]:
    """Return L2-normalised image embeddings of PNG files and their labels."""
    batch = torch.stack([preprocess(Image.open(p)) for p in paths])
    return F.normalize(model.encode_image(batch).float(), dim=-1), [label_from_filename(p) for p in paths]


@torch.no_grad()
def embed_texts(model: CLIP, lang: str, template: str) -> torch.Tensor:
    """Return L2-normalised embeddings of the query of every class in a language with a template."""
    if lang == "legacy":  # today's English captions, "a {}".format("orange circle")
        tokens = clip.tokenize([template.format(label.replace("_", " ")) for label in CLASS_NAMES])
    else:
        tokens = clip.tokenize([query_for(label, lang, template) for label in CLASS_NAMES])
    return F.normalize(model.encode_text(tokens).float(), dim=-1)


def precision_at_k(image_emb: torch.Tensor, labels: list[str], text_emb: torch.Tensor, k: int) -> list[float]:
    """Return precision@k of every class query when ranking the gallery by cosine similarity."""
    top = (text_emb @ image_emb.t()).topk(k, dim=1).indices
    return [sum(labels[j] == CLASS_NAMES[q] for j in top[q].tolist()) / k for q in range(len(CLASS_NAMES))]


def report_template(model: CLIP, gallery: torch.Tensor, labels: list[str], lang: str, template: str) -> bool:
    """Print precision@5 (mean, min), recall@1 and zero-shot accuracy of one template; return if targets met."""
    text_emb = embed_texts(model, lang, template)
    p5 = precision_at_k(gallery, labels, text_emb, 5)
    r1 = precision_at_k(gallery, labels, text_emb, 1)
    predicted = (gallery @ text_emb.t()).argmax(dim=1).tolist()
    accuracy = np.mean([CLASS_NAMES[i] == label for i, label in zip(predicted, labels)])
    print(f"{lang:>6} [{template!r}] precision@5 mean {np.mean(p5):.4f} min {min(p5):.2f} "
          f"(worst {CLASS_NAMES[int(np.argmin(p5))]})  recall@1 {np.mean(r1):.4f}  "
          f"zero-shot image accuracy {accuracy:.4f}", flush=True)
    return bool(np.mean(p5) >= 0.95 and min(p5) >= 0.9)


def evaluate(path: Path) -> bool:
    """Load the saved model with clip.load, report retrieval metrics on new images; return if targets met."""
    model, preprocess = clip.load(str(path), jit=False, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate_shapes(Path(tmp) / "eval", EVAL_PER_CLASS, EVAL_SEED)
        gallery, labels = embed_folder(model, preprocess, paths)
        print(f"evaluation gallery: {len(paths)} images (seed {EVAL_SEED})", flush=True)
        checks = [("legacy", "a {}"), ("legacy", "a photo of a {}")]
        checks += [(lang, template) for lang in LANGS for template in LANGUAGES[lang].templates[:2]]
        ok = all([report_template(model, gallery, labels, lang, t) for lang, t in checks])
        paths = generate_shapes(Path(tmp) / "sanity", SANITY_PER_CLASS, SANITY_SEED)
        sanity, sanity_labels = embed_folder(model, preprocess, paths)
    p10 = precision_at_k(sanity, sanity_labels, embed_texts(model, "legacy", "a {}"), 10)
    red_circle = p10[CLASS_NAMES.index("red_circle")]
    print(f"sanity ({SANITY_PER_CLASS}/class, seed {SANITY_SEED}): 'a red circle' top-10 precision {red_circle:.2f}; "
          f"precision@10 of all 'a <colour> <shape>' queries mean {np.mean(p10):.4f} min {min(p10):.2f}", flush=True)
    return ok and red_circle == 1.0 and min(p10) >= 0.8


def main() -> None:
    """Parse arguments, train, save and evaluate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .pt path")
    parser.add_argument("--steps", type=int, default=1200, help="training steps")
    parser.add_argument("--seed", type=int, default=TRAIN_SEED, help="training seed (data and init)")
    args = parser.parse_args()
    seed_everything(args.seed)
    start = time.time()
    model = CLIP(**ARCH)
    train(model, args.steps, args.seed)
    print(f"training took {time.time() - start:.0f}s (wall clock, including data generation)", flush=True)
    save_fp16(model, args.out)
    ok = evaluate(args.out)
    print("targets met" if ok else "TARGETS NOT MET", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
