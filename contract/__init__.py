"""The model's contract, in one TensorFlow-free place (docs/CONTRACTS.md §2).

Everything that two components must agree on about a served model version lives here and nowhere
else: the signature's key and tensor names, the abstain outputs and their reasons, which folder
names under a model base path are versions (TF Serving's rule), the labels file format, the file
suffixes treated as images, and the folder the nightly job files each label's photos under. Export
writes what this module names, the local model server and TF Serving read it, the gateway and the
nightly job consume it.

Pure standard library: importing it loads neither TensorFlow nor gRPC.
"""

from contract.folders import check_labels as check_label_folders
from contract.folders import folder_to_label, label_to_folder
from contract.images import IMAGE_SUFFIXES, is_image_name
from contract.labels import LABELS_FILENAME, format_labels, parse_labels, read_labels, write_labels
from contract.signature import (
    ABSTAIN_REASON_LOW_CONFIDENCE,
    ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY,
    ABSTAIN_REASONS,
    INPUT_IMAGES,
    OUTPUT_ABSTAIN,
    OUTPUT_ABSTAIN_REASON,
    OUTPUT_CLASSES,
    OUTPUT_KNOWN_PROBABILITY,
    OUTPUT_PROBABILITIES,
    RULE_FILENAME,
    RULE_OUTPUTS,
    SIGNATURE_NAME,
)
from contract.versions import INT64_MAX, INT64_MIN, parse_version, version_folders

__all__ = [
    "ABSTAIN_REASONS",
    "ABSTAIN_REASON_LOW_CONFIDENCE",
    "ABSTAIN_REASON_NOT_A_KNOWN_CATEGORY",
    "IMAGE_SUFFIXES",
    "INPUT_IMAGES",
    "INT64_MAX",
    "INT64_MIN",
    "LABELS_FILENAME",
    "OUTPUT_ABSTAIN",
    "OUTPUT_ABSTAIN_REASON",
    "OUTPUT_CLASSES",
    "OUTPUT_KNOWN_PROBABILITY",
    "OUTPUT_PROBABILITIES",
    "RULE_FILENAME",
    "RULE_OUTPUTS",
    "SIGNATURE_NAME",
    "check_label_folders",
    "folder_to_label",
    "format_labels",
    "is_image_name",
    "label_to_folder",
    "parse_labels",
    "parse_version",
    "read_labels",
    "version_folders",
    "write_labels",
]
