"""longread: long-document reading comprehension."""
__version__ = "0.1.0"
