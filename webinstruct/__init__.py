"""webinstruct: instruction data from web crawls (recall -> extract -> refine -> dedup -> decontaminate)."""
__version__ = "0.1.0"
