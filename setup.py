"""Build script: reads everything from settings.ini (nbdev 2 layout), no pkg_resources."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=["="])
cfg.read(here / "settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
extras = {"dev": dev_requirements}
for extra in ("onnx", "tensorboard"):
    if cfg.get(f"{extra}_requirements"):
        extras[extra] = cfg.get(f"{extra}_requirements").split()
console_scripts = cfg.get("console_scripts", "").split()
# shipped models (weights/NAME.safetensors + NAME.md) and the experiments' JSON, relative to the package
package_data = cfg.get("package_data", "experiments/*.json").split()

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=cfg.get("license", "apache2"),
    url=f"https://github.com/{cfg['user']}/{cfg['repo']}",
    packages=setuptools.find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    package_data={cfg["lib_path"]: package_data},
    python_requires=f">={cfg['min_python']}",
    install_requires=requirements,
    extras_require=extras,
    entry_points={"console_scripts": console_scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
