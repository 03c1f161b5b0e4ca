"""gazebench: do the saliency maps of chest X-ray classifiers look where radiologists look?"""

__version__ = "0.1.0"
