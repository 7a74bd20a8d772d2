"""tandem.dev/v1alpha1: the typed spec and status of every Tandem kind."""

from .adaptertraining import AdapterTrainingSpec, AdapterTrainingStatus
from .common import API_VERSION, GROUP, VERSION, Condition, CrossNamespaceReference
from .evaluation import EvaluationSpec, EvaluationStatus
from .hybridendpoint import HybridEndpointSpec, HybridEndpointStatus
from .knowledgebase import KnowledgeBaseSpec, KnowledgeBaseStatus
from .referencegrant import ReferenceGrantSpec
from .servingpool import ServingPoolSpec, ServingPoolStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AdapterTrainingSpec",
    "AdapterTrainingStatus",
    "Condition",
    "CrossNamespaceReference",
    "EvaluationSpec",
    "EvaluationStatus",
    "HybridEndpointSpec",
    "HybridEndpointStatus",
    "KnowledgeBaseSpec",
    "KnowledgeBaseStatus",
    "ReferenceGrantSpec",
    "ServingPoolSpec",
    "ServingPoolStatus",
]
