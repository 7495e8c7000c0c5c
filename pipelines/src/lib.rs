//! Pipelines: the DAG controller and the scheduler (work in progress).
