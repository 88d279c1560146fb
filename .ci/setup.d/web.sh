# The browser tests of the web page drive a real headless Chromium through chromedriver.
need_packages chromium chromium-driver fonts-dejavu-core
