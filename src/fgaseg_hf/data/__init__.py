"""Datasets for training and evaluating FGA-Seg models.

Submodules are imported explicitly (``from fgaseg_hf.data.synthetic import ...``) so that importing this
package stays cheap.
"""

__all__: list[str] = []
