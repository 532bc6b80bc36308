"""Figures into verdicts and advice: the diagnosis, the doctor rules, the report model."""
