"""Test-split photos release version 1 (models/fashion/1) classifies right, one per class.

Chosen once from its answers on the 372-photo test split (top-1 confidence 0.906 to 0.99), so
tests on the release model can assert every answer exactly instead of a share of right ones.
"""

from __future__ import annotations

V1_PHOTOS = {  # true label: file in <data set>/test/<label>/
    "dress": "28b09463-6bbb-491d-9ffc-f36df5c6b211.jpg",
    "hat": "2a12baab-f020-42e3-8e6b-5d82e3ed0b55.jpg",
    "longsleeve": "675319cc-b2f9-4b92-a126-472d4bcefdee.jpg",
    "outwear": "8a17d01f-80f9-4e88-ad35-51d09dbb5b3c.jpg",
    "pants": "f622318b-beb2-4f69-a99d-d8fbce6c2600.jpg",
    "shirt": "adab8f60-032a-4c67-94fc-4d2902a27501.jpg",
    "shoes": "8648344c-5acb-4f5d-93a1-7e89489489bf.jpg",
    "shorts": "78d2c5d2-b19d-422a-aff0-a6eb78291b4f.jpg",
    "skirt": "2001dec1-1e0a-4c11-9d15-120b019b3dea.jpg",
    "t-shirt": "687dd295-0b3d-4fce-aefe-1e72aaf0e687.jpg",
}
