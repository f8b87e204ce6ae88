"""Forensics: DIRE, laundering detection, hallucination detection, Diff-Protect."""
