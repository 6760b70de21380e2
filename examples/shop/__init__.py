"""The shop: products, stock and orders, on twofold.

twofold serve examples.shop:shop
"""

from examples.shop.service import shop

__all__ = ["shop"]
