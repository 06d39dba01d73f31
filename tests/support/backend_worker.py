"""Run by test_cross_backend.py in a subprocess per backend (KERAS_BACKEND set).

    python backend_worker.py produce DIR   # what this backend saves and computes
    python backend_worker.py consume DIR   # loads what every backend saved; prints JSON

`produce` writes every model with an input and its predictions
(DIR/<backend>/), the custom-step losses and gradients (DIR/<backend>.npz)
and the logits of torchvision's ResNets and MobileNetV2 and timm's ViT ported
in both data formats (DIR/<backend>_<data format>.npz), and writes the ported
models back as the peers' files; on torch it first writes the peers' models
and their logits (DIR/reference.npz). Torch's `produce` runs first: it also
writes the fixed weights and inputs the others compute the custom steps with.
Torch's `consume` loads every backend's peer files into the peers' models
(DIR/reloaded.npz).
"""

import itertools
import json
import pathlib
import sys

import keras
import numpy as np
from harness import sample_batch
from keras import ops
from tiny import CUSTOM_STEP_TASKS, LARGE, TINY_KWARGS

import zoo
from training.backends import BACKENDS
from zoo.steps import value_and_grad

MODELS = [name for name in TINY_KWARGS if name not in LARGE]


def save(root):
    folder = root / keras.backend.backend()
    folder.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    for name in MODELS:
        kwargs = TINY_KWARGS[name]
        model = zoo.create_model(name, **kwargs)
        x, _ = sample_batch(
            kwargs["input_shape"],
            zoo.model_task(name),
            kwargs.get("num_classes"),
            kwargs.get("vocab_size"),
        )
        model.save(folder / f"{name}.keras")
        np.savez(folder / f"{name}.npz", x=x, predictions=model.predict(x, verbose=0))


def load(root):
    """Returns {saved_on: {model: max abs difference of the predictions}}."""
    report = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        report[folder.name] = {}
        for name in MODELS:
            model = zoo.load_model(folder / f"{name}.keras")
            saved = np.load(folder / f"{name}.npz")
            predictions = model.predict(saved["x"], verbose=0)
            report[folder.name][name] = float(np.abs(predictions - saved["predictions"]).max())
    return report


def parity_inputs(root):
    """Fixed weights (saved once, by whichever backend runs first) and a fixed
    batch with its noise, so every backend computes the same function."""
    if not (root / "inputs.npz").exists():
        keras.utils.set_random_seed(0)
        for name, kwargs in TINY_KWARGS.items():
            if zoo.model_task(name) in CUSTOM_STEP_TASKS:
                zoo.create_model(name, **kwargs).save(root / f"{name}.keras")
        rng = np.random.default_rng(0)
        shape = (4, 8, 8, 1)
        np.savez(
            root / "inputs.npz",
            x=rng.uniform(0, 1, shape).astype("float32"),
            y=rng.integers(0, 3, 4).astype("int32"),
            noise=rng.normal(size=(4, 8)).astype("float32"),
            alpha=rng.uniform(size=(4, 1, 1, 1)).astype("float32"),
            epsilon=rng.normal(size=(4, 3)).astype("float32"),
            view=rng.uniform(0, 1, shape).astype("float32"),
        )
    return dict(np.load(root / "inputs.npz"))


def parity(root):
    """Each model's losses and gradients on the fixed batch."""
    i = {k: ops.convert_to_tensor(v) for k, v in parity_inputs(root).items()}
    m = {
        name: zoo.load_model(root / f"{name}.keras")
        for name in ("dcgan", "wgan_gp", "vae", "distiller", "simclr")
    }
    dcgan, wgan, vae, distiller, simclr = m.values()

    def wgan_critic():
        loss, penalty = wgan.critic_loss(i["x"], i["noise"], i["alpha"])
        return loss, (penalty,)

    def vae_loss():
        return vae.losses_for(i["x"][:, :6, :6], epsilon=i["epsilon"])  # (loss, (rec, kl))

    def distillation():
        loss, (student_loss, distillation_loss, _) = distiller.losses_for(i["x"], i["y"])
        return loss, (student_loss, distillation_loss)

    cases = {
        # name: (loss function returning (loss, extras), the model it differentiates)
        "dcgan_discriminator": (
            lambda: (dcgan.losses_for(i["x"], i["noise"], True)[0], ()),
            dcgan.discriminator,
        ),
        "dcgan_generator": (
            lambda: (dcgan.losses_for(i["x"], i["noise"], True)[1], ()),
            dcgan.generator,
        ),
        "wgan_gp_critic": (wgan_critic, wgan.discriminator),
        "wgan_gp_generator": (lambda: (wgan.generator_loss(i["noise"]), ()), wgan.generator),
        "vae": (vae_loss, vae),
        "distiller": (distillation, distiller.student),
        "simclr": (lambda: (simclr.projection_loss(i["x"], i["view"]), ()), simclr.encoder),
    }
    results = {}
    for case, (fn, owner) in cases.items():
        (loss, extras), grads = value_and_grad(fn, owner.trainable_variables, has_aux=True)
        results[f"{case}/loss"] = ops.convert_to_numpy(loss)
        for k, extra in enumerate(extras):
            results[f"{case}/extra{k}"] = ops.convert_to_numpy(extra)
        for k, grad in enumerate(grads):
            results[f"{case}/grad{k}"] = ops.convert_to_numpy(grad)
    np.savez(root / f"{keras.backend.backend()}.npz", **results)


# The peers' models the zoo ports, each with the peer that names it and the
# zoo's build of it (tests/support/torch_*.py builds the same).
PORTED = {
    "resnet18": ("torchvision", {"num_classes": 10}),
    "resnet50": ("torchvision", {"num_classes": 10}),
    "mobilenet_v2": ("torchvision", {"num_classes": 10, "alpha": 0.35}),
    "vit_tiny": (
        "timm",
        {
            "num_classes": 10,
            "patch_size": 16,
            "embed_dim": 24,
            "depth": 2,
            "num_heads": 3,
            "mlp_dim": 96,
        },
    ),
}
IMAGE_SIZE = 64


def peer_model(name, randomised):
    """The torch.nn reference for `PORTED[name]`, randomised or freshly built."""
    import torch_mobilenet
    import torch_resnet
    import torch_vit

    kwargs = PORTED[name][1]
    if name.startswith("resnet"):
        if randomised:
            return torch_resnet.randomised(name, kwargs["num_classes"])
        return torch_resnet.ResNet(*torch_resnet.ARCHITECTURES[name], kwargs["num_classes"]).eval()
    if name == "mobilenet_v2":
        args = (kwargs["num_classes"], kwargs["alpha"])
        if randomised:
            return torch_mobilenet.randomised(*args)
        return torch_mobilenet.MobileNetV2(*args).eval()
    vit = {key: value for key, value in kwargs.items() if key != "mlp_dim"}
    vit.update(img_size=IMAGE_SIZE, mlp_ratio=kwargs["mlp_dim"] / kwargs["embed_dim"])
    return torch_vit.randomised(**vit) if randomised else torch_vit.VisionTransformer(**vit).eval()


def peer_references(root):
    """Randomised reference models saved as the peers' files (.pth and
    .safetensors), with their logits for one input."""
    import torch
    from safetensors.numpy import save_file

    x = np.random.default_rng(0).normal(size=(2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype("float32")
    logits = {}
    for name in PORTED:
        model = peer_model(name, randomised=True)
        torch.save(model.state_dict(), root / f"{name}.pth")
        save_file(
            {k: v.numpy() for k, v in model.state_dict().items()}, str(root / f"{name}.safetensors")
        )
        with torch.no_grad():
            logits[name] = model(torch.from_numpy(x)).numpy()
    np.savez(root / "reference.npz", x=x, **logits)


def peer_port(root, data_format):
    """Each reference ported into the zoo model, from both file kinds; in
    channels_last, each ported model written back as the peer's file
    (DIR/<backend>_<model>.safetensors)."""
    keras.config.set_image_data_format(data_format)
    reference = np.load(root / "reference.npz")
    x = reference["x"] if data_format == "channels_first" else reference["x"].transpose(0, 2, 3, 1)
    backend, results = keras.backend.backend(), {}
    for name, (peer, kwargs) in PORTED.items():
        for suffix in ("pth", "safetensors"):
            model = zoo.create_model(name, input_shape=x.shape[1:], **kwargs)
            getattr(zoo.convert, f"from_{peer}")(model, root / f"{name}.{suffix}")
            results[f"{name}/{suffix}"] = ops.convert_to_numpy(model(x, training=False))
        if data_format == "channels_last":
            getattr(zoo.convert, f"to_{peer}")(model, root / f"{backend}_{name}.safetensors")
    np.savez(root / f"{backend}_{data_format}.npz", **results)


def peer_reload(root):
    """On torch: every backend's exported files loaded into the peers' models
    with strict=True, and their logits (DIR/reloaded.npz)."""
    import torch

    x = torch.from_numpy(np.load(root / "reference.npz")["x"])
    logits = {}
    for backend, name in itertools.product(BACKENDS, PORTED):
        model = peer_model(name, randomised=False)
        path = root / f"{backend}_{name}.safetensors"
        state = {k: torch.from_numpy(v) for k, v in zoo.convert.load_state_dict(path).items()}
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            logits[f"{backend}/{name}"] = model(x).numpy()
    np.savez(root / "reloaded.npz", **logits)


def produce(root):
    if keras.backend.backend() == "torch":
        peer_references(root)
    save(root)
    parity(root)
    for data_format in ("channels_last", "channels_first"):
        peer_port(root, data_format)


if __name__ == "__main__":
    command, root = sys.argv[1], pathlib.Path(sys.argv[2])
    if command == "produce":
        produce(root)
    else:
        if keras.backend.backend() == "torch":
            peer_reload(root)
        print(json.dumps({"loaded_on": keras.backend.backend(), "report": load(root)}))
