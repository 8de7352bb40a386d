"""pfdx: privileged features distillation for CVR prediction on TFX.

The repository keeps the user's top-level layout (pipeline/, components/,
models/, features/, serving/, simulator/, experiments/, reports/) and installs it
under one namespace, ``pfdx.<folder>``, so the generic folder names cannot collide with other
packages in site-packages or on a Kubeflow image.
"""
import setuptools

SUBPACKAGES = ("pipeline", "components", "models", "features", "serving", "simulator",
               "experiments", "reports")

setuptools.setup(
    name="pfdx",
    version="0.1.0",
    description="Privileged features distillation (HA-PFD) for CVR prediction on TFX",
    python_requires=">=3.11,<3.12",
    packages=["pfdx", "pfdx.config"] + [f"pfdx.{p}" for p in SUBPACKAGES],
    package_dir={"pfdx": "pfdx", **{f"pfdx.{p}": p for p in SUBPACKAGES}},
    package_data={"pfdx.pipeline": ["schema/*.pbtxt", "configs/*.yaml"]},
    # The exact versions live in requirements.lock (installed by `make env`);
    # these are the direct dependencies, pinned to the same versions.
    install_requires=[
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-data-validation==1.16.1",
        "tfx-bsl==1.16.1",
        "ml-metadata==1.16.0",
        "apache-beam[gcp]==2.60.0",
        "tensorflow-io==0.37.1",
        "tensorflow-recommenders==0.7.7",
        "tensorflow-serving-api==2.16.1",
        "kfp==2.8.0",
        "numpy==1.26.4",
        "pandas==1.5.3",
        "pyarrow==10.0.1",
        "matplotlib==3.8.4",
        "tabulate==0.10.0",
        "PyYAML==6.0.3",
    ],
    entry_points={"console_scripts": ["pfdx=pfdx.pipeline.cli:main"]},
)
