"""warehouse-operator: keeps data-warehouse connections honest."""

__version__ = "0.1.0"
