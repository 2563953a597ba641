"""conf/ and search_spaces/ stay at the repository's top level, where a user edits them, and
ship inside the package as automodel.conf and automodel.search_spaces (package-dir and
package-data in pyproject.toml). pyproject alone cannot add mapped packages to the ones it
finds, and a fixed list there would drop every subpackage added later."""

from setuptools import find_namespace_packages, find_packages, setup

# Each config group (conf/data, ...) listed too: setuptools warns about data in a folder
# that is not a listed package.
CONF = ["automodel.conf", *(f"automodel.conf.{g}" for g in find_namespace_packages("conf"))]

setup(packages=[*find_packages(include=["automodel*"]), *CONF, "automodel.search_spaces"])
