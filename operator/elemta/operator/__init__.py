"""elemta.operator: the Kubernetes operator for ``ElemtaCluster`` (kopf).

DESCRIPTION
    Reconciles each ``ElemtaCluster`` (``elemta.io/v1alpha1``) into the
    Deployments, Services, ConfigMap, Secrets (TLS, DKIM), autoscaler and,
    when asked, the NATS StatefulSet of one Elemta installation, and reports
    what it found in the object's status. Rendering (spec to manifests) is pure
    and lives apart from the kopf handlers; one level-based reconcile serves
    create, update and resume, and a timer repairs drift.

SECURITY
    The operator needs write access to the kinds it manages in the namespaces it
    watches and nothing else (see the chart's RBAC). Private keys it generates go
    into Secrets only; they are never logged or written to the status.

CONFIGURATION
    ELEMTA_OPERATOR_IMAGE: the image of the services when the spec names none.
    ELEMTA_OPERATOR_NAMESPACES: comma-separated namespaces to watch; empty: all.
"""
