# The C core (native/) is compiled by cffi when the package is installed.
from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])
