"""``trainwright operator``: run the TrainingJob and CapacityPlan controllers.

Uses in-cluster credentials inside a pod and the current KUBECONFIG otherwise.
kopf and the Kubernetes client are imported inside the handler so the rest of
the CLI starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re

from trainwright.api.v1alpha1.trainingjob import DEFAULT_TRAINER_IMAGE
from trainwright.cli._common import UsageError
from trainwright.operator.calibration_defaults import (
    DEFAULT_STEADY_SECONDS,
    POD_NAMESPACE_ENV,
    STORE_NAME,
)
from trainwright.operator.plan_first import DEFAULT_WORKERS
from trainwright.operator.throughput import DEFAULT_WINDOW_SECONDS, MAX_SAMPLES
from trainwright.resources.dataset_check import DEFAULT_START_SECONDS

_LIVENESS_URL = re.compile(r"^https?://[^/\s:]+(:\d+)?(/\S*)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TRAINER_IMAGE_ENV = "TRAINWRIGHT_TRAINER_IMAGE"
# status.throughput keeps MAX_SAMPLES readings, 30 s apart, for 1.5 windows.
MAX_WINDOW_SECONDS = 1800.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (TrainingJob, CapacityPlan)",
        description="Run the Trainwright controllers against the current cluster.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        metavar="P",
        help="serve /metrics and /healthz on this port (0 disables; default 8080)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="also serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"threads running reconciles (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--trainer-image",
        metavar="IMAGE",
        default=os.environ.get(TRAINER_IMAGE_ENV) or DEFAULT_TRAINER_IMAGE,
        help=(
            f"trainer image of TrainingJobs whose spec.image is unset (default: "
            f"${TRAINER_IMAGE_ENV} or {DEFAULT_TRAINER_IMAGE})"
        ),
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help=(
            "coordinate with other replicas through the kopf peering object NAME (a "
            "ClusterKopfPeering, or a KopfPeering per watched namespace): only the one of "
            "highest --priority works, the others stand by; default: standalone"
        ),
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        metavar="N",
        help="this replica's peering priority (default: random, so two replicas never tie)",
    )
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="neither record observed runs in the calibration store nor plan with them "
        "(one TrainingJob opts out with the annotation trainwright.io/calibration: off)",
    )
    parser.add_argument(
        "--no-dataset-check",
        action="store_true",
        help="plan TrainingJobs without first checking their dataset in a CPU pod (clusters "
        "whose pods never run, such as kwok's; one TrainingJob opts in or out with the "
        "annotation trainwright.io/dataset-check: on|off)",
    )
    parser.add_argument(
        "--dataset-check-start",
        type=float,
        default=DEFAULT_START_SECONDS,
        metavar="SECONDS",
        help="skip the dataset check when its pod has not started this long after its Job "
        f"was created (default {DEFAULT_START_SECONDS:g})",
    )
    parser.add_argument(
        "--calibration-namespace",
        metavar="NS",
        default=os.environ.get(POD_NAMESPACE_ENV) or "default",
        help=f"namespace of the ConfigMap {STORE_NAME} (default: ${POD_NAMESPACE_ENV}, the "
        "operator's own namespace in the chart, else default)",
    )
    parser.add_argument(
        "--calibration-steady",
        type=float,
        default=DEFAULT_STEADY_SECONDS,
        metavar="SECONDS",
        help="record a running TrainingJob once its tokens/s readings span this long "
        f"(default {DEFAULT_STEADY_SECONDS:g})",
    )
    parser.add_argument(
        "--throughput-window",
        type=float,
        default=DEFAULT_WINDOW_SECONDS,
        metavar="SECONDS",
        help="ThroughputBelowPlan once tokens/s stays under 70%% of plan this long "
        f"(default {DEFAULT_WINDOW_SECONDS:g}, at most {MAX_WINDOW_SECONDS:g})",
    )
    parser.add_argument(
        "--progress-endpoint",
        metavar="HOST:PORT",
        default=None,
        help="read every trainer's /progress here instead of from rank 0's pod IP "
        "(an operator outside the pod network with a port-forward, or a test's fake trainer)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.set_defaults(handler=run_operator)


def _endpoint(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--progress-endpoint must be HOST:PORT such as 127.0.0.1:9400, got {value!r}"
        )
    return host.strip("[]"), int(port)


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be 0 to 65535, got {args.metrics_port}")
    if args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    if args.liveness is not None and not _LIVENESS_URL.match(args.liveness):
        raise UsageError(
            f"--liveness must be an http(s) URL such as http://0.0.0.0:8081/healthz, "
            f"got {args.liveness!r}"
        )
    if not args.trainer_image.strip() or any(c.isspace() for c in args.trainer_image):
        raise UsageError(
            f"--trainer-image must be an image reference such as {DEFAULT_TRAINER_IMAGE}, "
            f"got {args.trainer_image!r}"
        )
    if args.peering is not None and not (
        len(args.peering) <= 253 and _DNS_SUBDOMAIN.match(args.peering)
    ):
        raise UsageError(
            f"--peering must be a Kubernetes object name (lower-case letters, digits, '-', '.'), "
            f"got {args.peering!r}"
        )
    if not 10 <= args.throughput_window <= MAX_WINDOW_SECONDS:
        raise UsageError(
            f"--throughput-window must be 10 to {MAX_WINDOW_SECONDS:g} seconds (status keeps "
            f"{MAX_SAMPLES} readings), got {args.throughput_window:g}"
        )
    if not 0 <= args.calibration_steady <= 86400:
        raise UsageError(
            f"--calibration-steady must be 0 to 86400 seconds, got {args.calibration_steady:g}"
        )
    if not 10 <= args.dataset_check_start <= 86400:
        raise UsageError(
            f"--dataset-check-start must be 10 to 86400 seconds, got {args.dataset_check_start:g}"
        )
    if not _DNS_SUBDOMAIN.match(args.calibration_namespace):
        raise UsageError(
            f"--calibration-namespace must be a namespace name, got {args.calibration_namespace!r}"
        )
    _endpoint(args.progress_endpoint)
    if args.priority is not None and args.peering is None:
        raise UsageError("--priority needs --peering NAME (a standalone operator has no peers)")


def run_operator(args: argparse.Namespace) -> int:
    _check(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf says "Handler '...' succeeded." for every event it hands a handler: eleven
        # thousand lines while 1,000 TrainingJobs start. Its warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from trainwright.operator.main import (
        CalibrationSettings,
        Peering,
        StartupError,
        Tuning,
        run,
    )

    peering = None
    if args.peering is not None:
        # kopf pauses every replica when two share the top priority; a random one
        # (drawn once per process) makes one replica work and the others stand by.
        priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
        peering = Peering(name=args.peering, priority=priority)

    try:
        run(
            namespaces=args.namespace,
            clusterwide=not args.namespace,
            metrics_port=args.metrics_port,
            liveness_endpoint=args.liveness,
            tuning=Tuning(workers=args.workers, api_connections=max(args.workers * 2, 8)),
            trainer_image=args.trainer_image,
            peering=peering,
            dataset_check=not args.no_dataset_check,
            dataset_check_start=args.dataset_check_start,
            calibration=CalibrationSettings(
                enabled=not args.no_calibration,
                namespace=args.calibration_namespace,
                steady_seconds=args.calibration_steady,
                throughput_window=args.throughput_window,
                progress_endpoint=_endpoint(args.progress_endpoint),
            ),
        )
    except StartupError as exc:
        raise UsageError(str(exc)) from None
    return 0
