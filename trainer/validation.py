"""The pre-flight checks under their old name: everything lives in trainer.preflight now."""

from trainer.preflight import (CODES, ERROR, OUTPUT_PATH_CODES, RULES, WARNING, Context, Finding, check_model_path,
                               detect_cuda, family_issues, has_errors, output_name_problem, output_path_issues,
                               trains_text_encoder, validate)

ValidationIssue = Finding

__all__ = ["CODES", "ERROR", "OUTPUT_PATH_CODES", "RULES", "WARNING", "Context", "ValidationIssue",
           "check_model_path", "detect_cuda", "family_issues", "has_errors", "output_name_problem",
           "output_path_issues", "trains_text_encoder", "validate"]
