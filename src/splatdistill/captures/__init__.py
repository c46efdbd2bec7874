"""From captures to datasets (nerfstudio's ``process_data``, apart from the format readers in
:mod:`splatdistill.data.formats`):

- :mod:`.sfm`: ``splatdistill data from-images``: structure from motion with pycolmap, written as a
  COLMAP model the ``colmap`` format reads;
- :mod:`.from_rgbd`: ``splatdistill data from-rgbd``: an RGB-D sequence (TUM, 7-Scenes, a folder of
  pairs) to the native format, with poses from :mod:`.odometry` (Open3D RGB-D odometry) when it has none.
"""
