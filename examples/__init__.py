"""Runnable end-to-end scripts that compose the planes (``python examples/example.py``).

``examples`` sits at the top of the import graph: it may import every plane and no plane imports it. It is a
package only so that the import-linter contracts can see it; the scripts export nothing.
"""

__all__: list[str] = []
