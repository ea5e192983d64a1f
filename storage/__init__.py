"""Project storage: one SQLite file per project (settings, items, labels, rounds, jobs).

Imports only the standard library, sqlite-utils and Pillow. Every public
function opens its own connection, so any thread or process may call it.
See docs/storage.md for the schema and docs/contracts.md for the API.
"""
from storage.export import (
    export_imagefolder_zip,
    export_labels_csv,
    export_labels_jsonl,
    export_summary,
    sanitize_class_name,
)
from storage.ingest import REASONS, IngestReport, ingest
from storage.items import (
    Item,
    duplicate_files,
    get_item,
    item_counts,
    mark_missing,
    rejected_files,
    reserve_validation,
    resolve_item_path,
    restore_found,
    usable_items,
    validation_order,
)
from storage.jobs import (
    Job,
    active_jobs,
    cancel_job,
    claim_job,
    enqueue_job,
    enqueue_unless_active,
    fail_job,
    finish_job,
    get_job,
    heartbeat,
    is_cancel_requested,
    latest_job,
    release_job,
    report_progress,
)
from storage.labels import (
    SKIP,
    SOURCES,
    LabelEvent,
    LabeledItem,
    clear_label,
    current_label,
    current_labels,
    label_counts,
    label_history,
    labeled_ids,
    labeled_items,
    set_label,
    set_labels,
    skipped_ids,
    training_labels,
    undo_label,
    unlabeled_ids,
    validation_ids,
    validation_labels,
)
from storage.project import (
    FITTED,
    INITIAL_STRATEGIES,
    TRAINING_LEVELS,
    Project,
    Settings,
    SettingsError,
    StorageError,
    UnavailableError,
    class_names,
    connect,
    create_project,
    fit_to_pool,
    load_settings,
    open_project,
    unavailable,
    save_settings,
    validate_settings,
)
from storage.walk import IMAGE_EXTENSIONS, find_images
from storage.rounds import (
    Round,
    budget_left,
    create_round,
    current_round,
    get_round,
    list_rounds,
    open_rounds,
    queued_ids,
    round_complete,
    round_guesses,
    round_items,
    round_label_times,
    round_queue,
)

__all__ = [name for name in dir() if not name.startswith("_")]
