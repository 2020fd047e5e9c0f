"""Importers: third-party agent-trajectory exports → tracemill Trajectory / Outcome / Preference.

    from pipeline.capture.importers import import_file, import_paths, detect_format, FORMATS
    result = import_file("runs/tau2.json")            # format detected from the content
    summary = import_paths(["exports/"], Workspace.open("ft-live"))

Formats (see `FORMATS[name].description`): OpenAI chat / fine-tuning JSONL, OpenAI Responses items,
Anthropic Messages, ShareGPT (FastChat, LLaMA-Factory), LLaMA-Factory v1, Langfuse exports, OTLP JSON
traces (GenAI semconv, OpenInference), OTel GenAI message arrays, tau-bench, tau2-bench, SWE-agent
.traj (1.x, 0.x) and ToolBench answer trees.

Guarantees: trajectory ids are deterministic (source ids, else a content hash) and a source without
timestamps starts on the day it is first imported into the workspace (re-imports keep that day), so
re-importing a file deduplicates; the
source format and original record are kept in `metadata`; a bad record is reported with its position
and field path and never stops the rest of the file.
"""

from pipeline.capture.importers.api import FileSummary, ImportSummary, import_file, import_paths, iter_file
from pipeline.capture.importers.base import DEFAULT_TIME, ImportResult, RecordError, import_day
from pipeline.capture.importers.detect import UnknownFormatError, detect_format
from pipeline.capture.importers.registry import FORMATS, Format

__all__ = [
    "DEFAULT_TIME", "FORMATS", "FileSummary", "Format", "ImportResult", "ImportSummary", "RecordError",
    "UnknownFormatError", "detect_format", "import_day", "import_file", "import_paths", "iter_file",
]
