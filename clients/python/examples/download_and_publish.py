"""A job's use of hoard: fetch a dataset, train, publish the model (create-and-use).

Run with a daemon up (`hoard daemon`) and HOARD_ENTITY/HOARD_PROJECT set, e.g.:

    HOARD_ENTITY=acme HOARD_PROJECT=vision python3 examples/download_and_publish.py
"""

import pathlib

import hoard

data = hoard.use_artifact("bike-dataset:latest")
root = data.download(path_prefix="images/")            # ./artifacts/bike-dataset:vN
print(f"{data.qualified_name}: {len(data.files())} files in {root}")

labels = data.get_path("labels.csv").download(root="labels/")
print("labels at", labels)

out = pathlib.Path("out")
out.mkdir(exist_ok=True)
(out / "model.bin").write_bytes(b"trained weights")     # stands in for training

model = hoard.Artifact("bike-model", type="model", metadata={"trained_on": data.qualified_name})
model.add_file(str(out / "model.bin"))
published = hoard.use_artifact(model)                  # usable at once; uploaded by the daemon
print(f"published {published.qualified_name} ({published.digest[:12]}…)")
